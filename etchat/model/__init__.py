"""E.T. Chat models. Importing this package registers the `etchat_*` model types with transformers' Auto classes."""

from etchat.model.configuration import ETChatLlamaConfig, ETChatPhi3Config, ETChatQwen2Config
from etchat.model.modeling_etchat import (
    LANGUAGE_MODELS,
    ETChatLlamaForCausalLM,
    ETChatPhi3ForCausalLM,
    ETChatQwen2ForCausalLM,
)

__all__ = [
    "LANGUAGE_MODELS",
    "ETChatLlamaConfig",
    "ETChatLlamaForCausalLM",
    "ETChatPhi3Config",
    "ETChatPhi3ForCausalLM",
    "ETChatQwen2Config",
    "ETChatQwen2ForCausalLM",
]
