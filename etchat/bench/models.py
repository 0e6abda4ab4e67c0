"""Randomly initialised E.T. Chat models of a chosen geometry, built straight from a config (no files needed).

`tiny` is `etchat.toy.tiny.TinyGeometry`'s defaults (CPU-sized); `full` is the published geometry (Phi-3-mini,
EVA-ViT-G, BERT-base Q-Former), meant for GPUs. Both use the tiny tokenizer: with random weights only the token
counts matter.
"""

from __future__ import annotations

import logging

import torch

from etchat.cli import DTYPES
from etchat.constants import MATCH_TOKEN
from etchat.model.configuration import ETChatPhi3Config
from etchat.model.modeling_etchat import ETChatPhi3ForCausalLM
from etchat.toy.tiny import TinyGeometry, round_up, tiny_llm_fields
from etchat.toy.tokenizer import build_tiny_tokenizer

logger = logging.getLogger(__name__)

GEOMETRIES = ("tiny", "full")
ATTENTIONS = ("eager", "sdpa", "flash_attention_2")


def build_tokenizer():
    tokenizer = build_tiny_tokenizer(vocab_size=TinyGeometry.tokenizer_vocab)
    tokenizer.add_special_tokens({"additional_special_tokens": [MATCH_TOKEN]})
    return tokenizer


def build_config(geometry: str, tokenizer) -> ETChatPhi3Config:
    special = dict(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        match_token_id=tokenizer.convert_tokens_to_ids(MATCH_TOKEN),
        use_matching=True,
        bi_attention=True,
        sliding_window=None,  # as loading sets it: the published runs had no attention window (docs/design.md §4)
    )
    if geometry == "full":
        # The published geometry is the config's default once the tiny overrides are absent.
        return ETChatPhi3Config(vision_config=None, qformer_config=None, **special)
    if geometry != "tiny":
        raise ValueError(f"Unknown geometry {geometry!r}, expected one of {GEOMETRIES}")
    tiny = TinyGeometry()
    return ETChatPhi3Config(
        vocab_size=round_up(len(tokenizer), 64),
        **tiny_llm_fields(tiny),
        vision_config=tiny.vision_config(),
        qformer_config=tiny.qformer_config(),
        num_query_tokens=tiny.num_query_tokens,
        **special,
    )


def set_attention(model, attn: str) -> None:
    """Use `attn` in the LLM and the Q-Former (EVA-ViT always runs torch's scaled_dot_product_attention)."""
    if attn not in ATTENTIONS:
        raise ValueError(f"Unknown attention {attn!r}, expected one of {ATTENTIONS}")
    model.set_attn_implementation(attn)
    model.model.qformer_bert.bert.set_attn_implementation(attn)


def build_model(geometry: str, attn: str, dtype: str, device: str, seed: int = 0):
    """A random-weight E.T. Chat of `geometry` on `device` in `dtype` (a key of DTYPES); returns (model, tokenizer)."""
    tokenizer = build_tokenizer()
    config = build_config(geometry, tokenizer)
    torch.manual_seed(seed)
    with torch.device(device):
        model = ETChatPhi3ForCausalLM(config)
    model.to(DTYPES[dtype])
    set_attention(model, attn)
    logger.info("built %s model: %.1fM parameters, %s, %s", geometry, model.num_parameters() / 1e6, attn, dtype)
    return model.eval(), tokenizer
