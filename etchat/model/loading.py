"""Loading and saving E.T. Chat in the published formats (docs/design.md §7).

- Base weights: an LLM folder (`model_zoo/Phi-3-mini-4k-instruct`), `eva_vit_g.pth` and
  `instruct_blip_vicuna7b_trimmed.pth` (`torch.load(weights_only=True)`), named by `pretrain_vision_tower` /
  `pretrain_qformer` in the config; optionally a projector `.safetensors` (`pretrain_projector`).
- Full checkpoints: a Hugging Face folder, `model_type: etchat_*`, safetensors with the published names.
- Partial checkpoints: `adapter_model.safetensors` (PEFT LoRA, merged on load) and/or `pytorch_model.safetensors`
  (the non-LoRA trainables) on top of the base named by `config.model_name_or_path` (at `config.model_revision`).

A checkpoint or base is a folder or a Hugging Face Hub repo id (`etchat.hub`).

A weight that no file provides is an error listing it, unless the caller names it as new (a head or projector a
training stage creates).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoTokenizer, GenerationConfig, PretrainedConfig
from transformers.utils import logging as hf_logging

from etchat.constants import MATCH_TOKEN
from etchat.hub import resolve_file, resolve_model
from etchat.io import file_problem, give_default_modes
from etchat.model.eva_vit import load_eva_vit_weights
from etchat.model.modeling_etchat import LANGUAGE_MODELS
from etchat.model.qformer import hf_to_published_key, published_to_hf_key

logger = logging.getLogger(__name__)

ADAPTER_FILE = "adapter_model.safetensors"
PARTIAL_FILE = "pytorch_model.safetensors"
PROJECTOR_MODULES = ("qformer_proj", "qformer_q_proj", "qformer_k_proj", "qformer_v_proj")


class NotETChatCheckpointError(ValueError):
    """The folder is not an E.T. Chat checkpoint (nor a base LLM the caller asked to build one from)."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint lacks weights the model needs, or holds weights the model does not have."""


class CheckpointFileError(ValueError):
    """A file of a checkpoint is missing, cut short or unreadable; the message names it."""


TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")


def check_files(paths: Iterable[str | os.PathLike]) -> None:
    """Raise a CheckpointFileError naming the first of ``paths`` (files, or folders whose weights and JSON files are
    checked) that is cut short or unreadable, before a loader fails on it with a less helpful message."""
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".json")) if path.is_dir() else [path]
        for file in files:
            if not file.is_file():
                raise CheckpointFileError(f"{file}: no such file")
            try:
                problem = file_problem(file)
            except OSError as error:
                problem = f"unreadable ({error})"
            if problem:
                raise CheckpointFileError(f"{file}: {problem}")


def _short(keys: Iterable[str], limit: int = 30) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_config(path: str, language_model: str | None = None, **overrides) -> PretrainedConfig:
    """Config of an E.T. Chat checkpoint; with `language_model`, a plain LLM folder is accepted as the start of
    training (its config gains the E.T. Chat fields)."""
    if not os.path.isfile(os.path.join(path, "config.json")):
        raise NotETChatCheckpointError(f"{path}: no config.json, not a model folder")
    config = AutoConfig.from_pretrained(path)
    if not config.model_type.startswith("etchat_"):
        if language_model is None:
            raise NotETChatCheckpointError(
                f"{path} is not an E.T. Chat checkpoint (model_type={config.model_type!r}, expected 'etchat_*')"
            )
        config_cls = LANGUAGE_MODELS[language_model][0]
        fields = {k: v for k, v in config.to_dict().items() if k != "model_type"}
        config = config_cls.from_dict(fields)
        config.language_model = language_model
    for key, value in overrides.items():
        setattr(config, key, value)
    if config.language_model == "phi3" and "sliding_window" not in overrides:
        # Phi-3's config asks for a window (2047; E.T. Chat's training writes 2048), but the published code computed
        # full causal attention: on its pinned transformers only flash-attention-2 reads the window, and it ran eager
        # or sdpa (docs/design.md §4). `sliding_window=N` as an override turns a window on.
        config.sliding_window = None
    return config


def model_class(config: PretrainedConfig):
    for config_cls, model_cls in LANGUAGE_MODELS.values():
        if config.model_type == config_cls.model_type:
            return model_cls
    raise NotETChatCheckpointError(f"unknown E.T. Chat model type {config.model_type!r}")


def load_vision_tower_weights(model, path: str) -> set[str]:
    """`eva_vit_g.pth` into `model.vision_tower.vision_tower`; returns the parameter names it filled."""
    tower = model.model.vision_tower.vision_tower
    check_files([path])
    load_eva_vit_weights(tower, path)
    return {f"model.vision_tower.vision_tower.{k}" for k in tower.state_dict()}


def load_qformer_weights(model, path: str) -> set[str]:
    """`instruct_blip_vicuna7b_trimmed.pth` ({'model': state_dict} with Qformer.*, ln_vision.*, query_tokens)."""
    check_files([path])
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state_dict = checkpoint.get("model", checkpoint)
    renamed = {}
    for key, value in state_dict.items():
        if key.startswith("Qformer.bert."):
            renamed[published_to_hf_key("model.qformer_bert." + key[len("Qformer.") :])] = value
        elif key.startswith("ln_vision."):
            renamed["model.qformer_ln." + key[len("ln_vision.") :]] = value
        elif key == "query_tokens":
            renamed["model.qformer_query"] = value
        elif key.startswith("Qformer.cls."):
            continue  # BLIP-2's language-modelling head; E.T. Chat runs the Q-Former as an encoder only
        else:
            logger.debug("ignoring %s from %s", key, path)
    expected = {
        k
        for k in model.state_dict()
        if k.startswith(("model.qformer_bert.", "model.qformer_ln.", "model.qformer_query"))
    }
    _load_exactly(model, renamed, expected, path)
    return expected


def load_projector_weights(model, path: str) -> set[str]:
    state_dict = {_strip_prefixes(k): v for k, v in load_file(path).items()}
    state_dict = {k: v for k, v in state_dict.items() if any(m in k for m in PROJECTOR_MODULES)}
    expected = {k for k in model.state_dict() if any(f"model.{m}." in k for m in PROJECTOR_MODULES)}
    _load_exactly(model, state_dict, expected, path)
    return expected


def _load_exactly(model, state_dict: dict, expected: set[str], source: str) -> None:
    missing, unexpected = expected - state_dict.keys(), state_dict.keys() - expected
    if missing or unexpected:
        raise CheckpointMismatchError(
            f"{source}: missing weights [{_short(missing)}]; unexpected weights [{_short(unexpected)}]"
        )
    model.load_state_dict(state_dict, strict=False)


def _strip_prefixes(key: str) -> str:
    key = re.sub(r"^base_model\.model\.", "", key)
    return published_to_hf_key(key.replace(".base_layer.", "."))


def load_partial_weights(model, path: str) -> set[str]:
    """`pytorch_model.safetensors`: the non-LoRA trainables of a stage, names as saved by (PEFT-wrapped) training."""
    state_dict = {_strip_prefixes(k): v for k, v in load_file(path).items()}
    unexpected = state_dict.keys() - model.state_dict().keys()
    if unexpected:
        raise CheckpointMismatchError(f"{path}: weights the model does not have [{_short(unexpected)}]")
    model.load_state_dict(state_dict, strict=False)
    return set(state_dict)


def merge_adapter(model, path: str):
    from peft import PeftModel

    logger.info("Merging LoRA adapter from %s", path)
    return PeftModel.from_pretrained(model, path).merge_and_unload()


def load_etchat(
    path: str,
    *,
    revision: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: str | torch.device = "cpu",
    attn_implementation: str | None = "sdpa",
    language_model: str | None = None,
    new_modules: Iterable[str] = (),
    **config_overrides,
):
    """Load an E.T. Chat checkpoint (full or partial), or build one from base weights.

    `path` is a folder or a Hub repo id (at `revision`). `language_model` accepts a plain LLM as `path` (training's
    stage 1). `new_modules` names parameter-name fragments that may legitimately have no weights yet (e.g. `frm_head`
    when a stage turns matching on); any other missing weight is an error. A file that is cut short or unreadable is a
    CheckpointFileError naming it, raised before the slow part of the load. Returns (model, tokenizer).
    """
    path = resolve_model(path, revision).path
    if os.path.isdir(path):
        check_files([path])
    config = load_config(path, language_model, **config_overrides)
    check_tokenizer_files(path)
    config.load_base_models = any((config.pretrain_vision_tower, config.pretrain_qformer, config.pretrain_projector))
    adapter, partial = os.path.join(path, ADAPTER_FILE), os.path.join(path, PARTIAL_FILE)
    is_partial = os.path.isfile(adapter) or os.path.isfile(partial)
    weights_path = path
    if is_partial:
        if not config.model_name_or_path:
            raise NotETChatCheckpointError(f"{path}: partial checkpoint without model_name_or_path in its config")
        base_revision = getattr(config, "model_revision", None)
        weights_path = resolve_model(config.model_name_or_path, base_revision, relative_to=path).path
        logger.info("Loading base model from %s", weights_path)
        check_files([weights_path])
    model, info = _from_pretrained_quietly(model_class(config), weights_path, config, dtype, attn_implementation)
    unexpected = set(info["unexpected_keys"]) | {k for k, *_ in info["mismatched_keys"]}
    if unexpected:
        raise CheckpointMismatchError(f"{weights_path}: unexpected or mis-shaped weights [{_short(unexpected)}]")
    missing = set(info["missing_keys"])
    missing -= _load_base_weights(model, config, path, missing)
    if os.path.isfile(adapter):
        model = merge_adapter(model, path)
    if os.path.isfile(partial):
        missing -= load_partial_weights(model, partial)
    missing = {k for k in missing if not any(fragment in k for fragment in new_modules)}
    if missing:
        raise CheckpointMismatchError(f"{path}: no weights for [{_short(missing)}]")
    model.model.vision_tower.requires_grad_(False)  # frozen in every stage; loading re-creates its parameters
    tokenizer = load_tokenizer(path, config)
    _load_generation_config(model, path)
    return model.to(device), tokenizer


def _from_pretrained_quietly(cls, path, config, dtype, attn_implementation):
    # transformers reports weights absent from the file; we check them ourselves, against the base .pth files too.
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        return cls.from_pretrained(
            path, config=config, dtype=dtype, attn_implementation=attn_implementation, output_loading_info=True
        )
    finally:
        hf_logging.set_verbosity(verbosity)


def _load_base_weights(model, config, path: str, missing: set[str]) -> set[str]:
    """Fill weights the checkpoint lacks from the base files the config names; a checkpoint that has them (a
    trained stage saved whole) keeps its own."""
    sources = (
        (config.pretrain_vision_tower, ("model.vision_tower.",), load_vision_tower_weights),
        (
            config.pretrain_qformer,
            ("model.qformer_bert.", "model.qformer_ln.", "model.qformer_query"),
            load_qformer_weights,
        ),
        (config.pretrain_projector, tuple(f"model.{m}." for m in PROJECTOR_MODULES), load_projector_weights),
    )
    filled = set()
    for file, prefixes, load in sources:
        if file and any(k.startswith(prefixes) for k in missing):
            filled |= load(model, resolve_file(file, path))
    return filled


def _load_generation_config(model, path: str) -> None:
    try:
        model.generation_config = GenerationConfig.from_pretrained(path)
    except OSError:
        logger.debug("%s has no generation_config.json", path)


def check_tokenizer_files(path: str) -> None:
    if not any(os.path.isfile(os.path.join(path, name)) for name in TOKENIZER_FILES):
        raise CheckpointFileError(f"{path}: no tokenizer files (none of {', '.join(TOKENIZER_FILES)})")


def load_tokenizer(path: str, config: PretrainedConfig, model_max_length: int | None = None):
    if os.path.isdir(path):
        check_tokenizer_files(path)
    kwargs = {"model_max_length": model_max_length} if model_max_length else {}
    tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
    if tokenizer.pad_token is None:
        logger.info("tokenizer has no PAD token, using EOS %s", tokenizer.eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    if config.use_matching and config.match_token_id is not None:
        if tokenizer.convert_tokens_to_ids(MATCH_TOKEN) != config.match_token_id:
            raise CheckpointMismatchError(
                f"{path}: tokenizer maps {MATCH_TOKEN} to {tokenizer.convert_tokens_to_ids(MATCH_TOKEN)}, "
                f"config.match_token_id is {config.match_token_id}"
            )
    return tokenizer


def add_match_token(model, tokenizer) -> int:
    """Add `<vid>` as a special token; rows a grown vocabulary adds start at the mean of the old rows (design.md §4)."""
    num_new = tokenizer.add_special_tokens({"additional_special_tokens": [MATCH_TOKEN]})
    model.config.match_token_id = tokenizer.convert_tokens_to_ids(MATCH_TOKEN)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        old_rows = model.get_input_embeddings().num_embeddings
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        with torch.no_grad():
            for weight in (model.get_input_embeddings().weight, model.get_output_embeddings().weight):
                weight[old_rows:] = weight[:old_rows].mean(0, keepdim=True)
    return num_new


def save_etchat(model, tokenizer, output_dir: str, state_dict: dict | None = None) -> None:
    """Write a full checkpoint (format b): config, safetensors with the published names, tokenizer, generation
    config. `state_dict` (e.g. gathered from ZeRO-3 shards) replaces the model's own."""
    # Written under the published names explicitly: transformers only reverts renamings it applied while loading,
    # and a model built from a plain LLM folder applied none.
    state_dict = {hf_to_published_key(k): v for k, v in (state_dict or model.state_dict()).items()}
    model.save_pretrained(output_dir, state_dict=state_dict, save_original_format=False)
    tokenizer.save_pretrained(output_dir)
    give_default_modes(output_dir)  # the safetensors writer makes its files readable by their owner only
