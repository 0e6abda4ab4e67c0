"""LoRA on the LLM's attention projections (peft), as E.T. Chat's stages 2 and 3 train it."""

from __future__ import annotations

from peft import LoraConfig, get_peft_model

# language_model -> attention projections that get LoRA (Phi-3 fuses q, k and v into one projection).
LORA_TARGETS = {
    "phi3": ("qkv_proj", "o_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "llama": ("q_proj", "k_proj", "v_proj", "o_proj"),
}


def lora_config(language_model: str, r: int = 128, alpha: int = 256, dropout: float = 0.05, bias: str = "none"):
    if language_model not in LORA_TARGETS:
        raise ValueError(f"no LoRA targets known for language_model={language_model!r}")
    # Only the decoder layers: the Q-Former's and EVA-ViT's projections have other names, and the pattern keeps it so.
    pattern = r"model\.layers\.\d+\.self_attn\.(" + "|".join(LORA_TARGETS[language_model]) + ")"
    return LoraConfig(
        task_type="CAUSAL_LM", r=r, lora_alpha=alpha, lora_dropout=dropout, bias=bias, target_modules=pattern
    )


def add_lora(model, language_model: str | None = None, **kwargs):
    """Wrap `model` with LoRA adapters (defaults r 128, alpha 256, dropout 0.05); returns the PeftModel."""
    return get_peft_model(model, lora_config(language_model or model.config.language_model, **kwargs))


def merge_lora(peft_model):
    """Fold the adapters into the base weights and return the plain model."""
    return peft_model.merge_and_unload()
