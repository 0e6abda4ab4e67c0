"""LoRA on the LLM's attention projections (peft), as E.T. Chat's stages 2 and 3 train it: the one place where the
adapters are configured, for training and tests alike."""

from __future__ import annotations

import logging

from peft import LoraConfig, get_peft_model

logger = logging.getLogger(__name__)

# language_model -> attention projections that get LoRA (Phi-3 fuses q, k and v into one projection).
LORA_TARGETS = {
    "phi3": ("qkv_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
}


def lora_config(language_model: str, r: int = 128, alpha: int = 256, dropout: float = 0.05, bias: str = "none"):
    """The published LoRA settings (r 128, alpha 256, dropout 0.05) on the decoder layers' attention projections."""
    if language_model not in LORA_TARGETS:
        raise ValueError(f"no LoRA targets known for language_model={language_model!r}")
    # Only the decoder layers: the Q-Former's and EVA-ViT's projections have other names, and the pattern keeps it so.
    pattern = r"model\.layers\.\d+\.self_attn\.(" + "|".join(LORA_TARGETS[language_model]) + ")"
    # No task type: peft's generic PeftModel passes the batch's extra keys (images, queries, ...) through as they are,
    # where PeftModelForCausalLM adds inputs_embeds=None, which clashes with the embeddings the model builds itself.
    return LoraConfig(task_type=None, r=r, lora_alpha=alpha, lora_dropout=dropout, bias=bias, target_modules=pattern)


def add_lora(model, language_model: str | None = None, **kwargs):
    """Wrap `model` with LoRA adapters (`lora_config`'s keyword arguments); returns the PeftModel."""
    config = lora_config(language_model or model.config.language_model, **kwargs)
    logger.info("LoRA on %s (r=%d, alpha=%d)", config.target_modules, config.r, config.lora_alpha)
    return get_peft_model(model, config)
