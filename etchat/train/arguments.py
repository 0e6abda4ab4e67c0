"""Command-line arguments of `python -m etchat.train.train` (the original's flags, docs/design.md §6).

Three groups, parsed together by `HfArgumentParser`: what model to build (`ModelArguments`), what data to read
(`DataArguments`, the data module's own, `etchat.data.dataset`) and how to train (`TrainingArguments`, transformers'
own plus LoRA / tuning-mode / saving options).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import transformers

from etchat.data.dataset import DataArguments

__all__ = ["DataArguments", "ModelArguments", "TrainingArguments", "parse_json_arg"]

TUNING_MODES = ("projector", "qformer", "attention", "llm")
# The original's name for EVA-ViT-G; checkpoints call it `eva_vit_g`.
VISION_TOWER_NAMES = {"eva_vit": "eva_vit_g", "eva_vit_g": "eva_vit_g"}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "start point: a plain LLM (stage 1) or an E.T. Chat checkpoint; a folder or a Hub repo id "
            "(e.g. microsoft/Phi-3-mini-4k-instruct)"
        },
    )
    model_revision: str | None = field(
        default=None, metadata={"help": "branch, tag or commit of a Hub --model_name_or_path (default: main)"}
    )
    language_model: str | None = field(default=None, metadata={"help": "phi3, qwen2 or llama"})
    conv_type: str | None = field(default=None, metadata={"help": "chat template (default: the checkpoint's)"})
    vision_tower: str = field(default="eva_vit", metadata={"help": "eva_vit (= eva_vit_g)"})
    vision_processor: str = field(default="clip_center_224", metadata={"help": "frame transform"})
    vision_output_layer: int = field(default=-2, metadata={"help": "EVA-ViT block whose output is used"})
    vision_output_token: str = field(default="patch", metadata={"help": "which ViT tokens feed the Q-Former"})
    mm_projector: str = field(default="qformer", metadata={"help": "frame compressor type"})
    pretrain_vision_tower: str | None = field(default=None, metadata={"help": "eva_vit_g.pth"})
    pretrain_qformer: str | None = field(default=None, metadata={"help": "instruct_blip_vicuna7b_trimmed.pth"})
    pretrain_projector: str | None = field(default=None, metadata={"help": "projector weights (.safetensors)"})
    qformer_tokenizer_path: str | None = field(
        default=None, metadata={"help": "bert-base-uncased: a folder, its vocab.txt, or a Hub repo id"}
    )
    use_matching: bool = field(default=False, metadata={"help": "train the <vid> matching heads"})
    use_time_tag: bool = field(default=False, metadata={"help": "per-frame 'Current time' Q-Former instructions"})
    bi_attention: bool = field(default=False, metadata={"help": "frames of a video attend to each other"})
    alpha: float = field(default=2.0, metadata={"help": "base of the soft matching target alpha^-|i-t|"})
    vision_config: str | None = field(
        default=None,
        metadata={
            "help": "EVA-ViT geometry override for small models: a JSON object, or a JSON file holding it "
            "(or holding it under the key 'vision_config', like etchat.toy.tiny's tiny.json)"
        },
    )
    qformer_config: str | None = field(
        default=None, metadata={"help": "Q-Former geometry override, same forms as --vision_config"}
    )
    num_query_tokens: int | None = field(default=None, metadata={"help": "Q-Former query count override"})

    def __post_init__(self):
        if self.vision_tower not in VISION_TOWER_NAMES:
            raise ValueError(
                f"--vision_tower {self.vision_tower!r} is not supported, use one of {list(VISION_TOWER_NAMES)}"
            )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    model_max_length: int = field(default=2048, metadata={"help": "batches are truncated to this many tokens"})
    fast_tokenizer: bool = field(default=True, metadata={"help": "kept for the original's scripts (always fast)"})
    group_by_modality: bool = field(default=False, metadata={"help": "batches of only vision or only text samples"})
    lora_enable: bool = field(default=False, metadata={"help": "train LoRA adapters on the LLM's attention"})
    lora_r: int = field(default=128)
    lora_alpha: int = field(default=256)
    lora_dropout: float = field(default=0.05)
    lora_bias: str = field(default="none", metadata={"help": "none, all or lora_only"})
    lora_lr: float | None = field(default=None, metadata={"help": "learning rate of the LoRA parameters"})
    tuning_mode: str | None = field(
        default=None, metadata={"help": f"which non-LoRA parameters train: {', '.join(TUNING_MODES)}"}
    )
    save_full_model: bool = field(
        default=False, metadata={"help": "save the final model whole (LoRA merged) instead of adapter + trainables"}
    )
    # transformers 5 folded the ratio into warmup_steps (a float below 1); the published scripts pass the ratio.
    warmup_ratio: float | None = field(
        default=None, metadata={"help": "warmup as a fraction of the training steps (sets --warmup_steps)"}
    )

    def __post_init__(self):
        if self.tuning_mode not in TUNING_MODES:
            raise ValueError(f"--tuning_mode must be one of {TUNING_MODES}, got {self.tuning_mode!r}")
        if self.lora_enable and self.tuning_mode == "llm":
            raise ValueError("--tuning_mode llm trains the whole LLM; it cannot be combined with --lora_enable")
        if self.warmup_ratio is not None:
            if not 0 <= self.warmup_ratio < 1:
                raise ValueError(f"--warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
            if self.warmup_steps:
                raise ValueError("give either --warmup_ratio or --warmup_steps, not both")
            self.warmup_steps = self.warmup_ratio
        if self.accelerator_config is None and _configured_state_exists():
            # The caller set up the process group itself (CPU runs use gloo); the Trainer must reuse it.
            self.accelerator_config = {"use_configured_state": True}
        super().__post_init__()


def _configured_state_exists() -> bool:
    from accelerate import PartialState

    return bool(PartialState._shared_state)


def parse_json_arg(value: str | None, key: str) -> dict | None:
    """`--vision_config`-style value: a JSON object, or a JSON file holding it (directly or under `key`)."""
    if value is None:
        return None
    if os.path.isfile(value):
        with open(value) as f:
            data = json.load(f)
        data = data.get(key, data) if isinstance(data, dict) else data
    else:
        try:
            data = json.loads(value)
        except json.JSONDecodeError as e:
            raise ValueError(f"--{key} must be a JSON object or a JSON file, got {value!r}: {e}") from e
    if not isinstance(data, dict):
        raise ValueError(f"--{key} must describe a JSON object, got {type(data).__name__}")
    return data
