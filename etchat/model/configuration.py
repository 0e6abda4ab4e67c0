"""E.T. Chat configuration: the language model's config plus the fields of the video path and `<vid>` matching.

The field names are those of the released checkpoints' `config.json` (`model_type: etchat_phi3`). Three fields are
additions of this project: for small test and quickstart models, `vision_config` and `qformer_config` override the
EVA-ViT-G and BERT-base geometry (when absent the published geometry is used); `model_revision` pins the commit of a
partial checkpoint's base when that base is a Hub repo.
"""

from __future__ import annotations

from dataclasses import dataclass

from transformers import LlamaConfig, Phi3Config, Qwen2Config

EVA_VIT_G_GEOMETRY = dict(img_size=224, patch_size=14, width=1408, depth=40, num_heads=16, mlp_dim=6144)
BERT_BASE_QFORMER_GEOMETRY = dict(
    vocab_size=30523,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    cross_attention_frequency=2,
    max_position_embeddings=512,
)
NUM_QUERY_TOKENS = 32


@dataclass
class ETChatFields:
    vision_tower: str = "eva_vit_g"
    vision_processor: str = "clip_center_224"
    vision_output_layer: int = -2
    vision_output_token: str = "patch"
    mm_projector: str = "qformer"
    use_matching: bool = True
    use_time_tag: bool = False
    bi_attention: bool = True
    alpha: float = 2.0
    match_token_id: int | None = None
    conv_type: str = "phi3"
    language_model: str = "phi3"
    load_base_models: bool = False
    model_name_or_path: str | None = None
    model_revision: str | None = None
    pretrain_vision_tower: str | None = None
    pretrain_qformer: str | None = None
    pretrain_projector: str | None = None
    vision_config: dict | None = None
    qformer_config: dict | None = None
    qformer_tokenizer_path: str | None = None
    num_query_tokens: int = NUM_QUERY_TOKENS

    def vision_geometry(self) -> dict:
        return {**EVA_VIT_G_GEOMETRY, **(self.vision_config or {})}

    def qformer_geometry(self) -> dict:
        return {**BERT_BASE_QFORMER_GEOMETRY, **(self.qformer_config or {})}


class ETChatPhi3Config(Phi3Config, ETChatFields):
    model_type = "etchat_phi3"


class ETChatQwen2Config(Qwen2Config, ETChatFields):
    model_type = "etchat_qwen2"


class ETChatLlamaConfig(LlamaConfig, ETChatFields):
    model_type = "etchat_llama"
