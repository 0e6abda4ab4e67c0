"""What produced a prediction folder: ``<pred_path>/run.json`` (docs/design.md §13).

The run record names the model (as given, the Hub commit it resolved to, a digest of its weight files' bytes and one
of its config and tokenizer files), every setting an answer depends on (decoding, video sampling, the prompts, the
dtype), the project version and the environment. The inference runner writes it when a run starts in an empty
folder; a later run in the same folder compares its own record with it (`differences`) and refuses, before the model
loads, when an answer would depend on something else: answers made under other settings are never mixed with new
ones. ``--overwrite`` replaces such a run (`claim_run_folder`).

Layout (``format`` 1; keys may be added, none renamed)::

    {"format": 1, "benchmark": "etbench",
     "model": {"name", "revision", "weights_digest", "config_digest"},
     "settings": {"decoding": {...}, "video": {...}, "prompts_digest", "dtype"},
     "project_version": "0.1.0+g<commit>", "environment": {"device", "torch", "transformers", "python"},
     "created": "2026-12-06T12:00:00Z"}

Weight digests are SHA-256 over the files' bytes. Hashing some gigabytes takes seconds, so each file's digest is kept
in ``<pred_path>/.file_digests.json`` under its path, size and modification time and reused while those stay.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from etchat.io import METRICS_FILE, RUN_FILE, write_json_atomic
from etchat.locking import FileLock, describe, live_locks
from etchat.version import project_version

logger = logging.getLogger(__name__)

RUN_FORMAT = 1
DIGEST_CACHE_FILE = ".file_digests.json"
RUN_LOCK_FILE = ".run.lock"
SHARD_LOCK_PATTERN = ".{name}.lock"
HASH_CHUNK = 1 << 24
# Files loading reads besides the weights: the config, the generation config, the adapter config, the tokenizer.
CONFIG_FILES = (
    "config.json",
    "generation_config.json",
    "adapter_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "chat_template.jinja",
)
WEIGHT_SUFFIXES = (".safetensors", ".bin")
NOT_WEIGHTS = ("training_args.bin",)
# Outputs a run and its scoring leave in a prediction folder, removed by --overwrite (besides the stem's files).
SCORING_OUTPUTS = (METRICS_FILE, "metrics.log", "qvhighlights_submission.jsonl", "dvc_submission.json")


class RunMismatchError(ValueError):
    """A prediction folder holds answers of a run with other settings; the message is one line saying what differs
    and how to go on."""


def read_run_record(pred_path: str | os.PathLike) -> dict | None:
    """The run record of a prediction folder (or of the folder of a prediction file); None when it has none."""
    pred_path = Path(pred_path)
    folder = pred_path if pred_path.is_dir() or not pred_path.suffix else pred_path.parent
    path = folder / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return record


# ---- digests -------------------------------------------------------------------------------------------------------


def sha256_of(data: bytes | str) -> str:
    return "sha256:" + hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def json_digest(value) -> str:
    """Digest of a JSON-able value (keys sorted, so that equal values give equal digests)."""
    return sha256_of(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str))


class DigestCache:
    """File digests kept under (path, size, modification time) in a JSON file; stale entries are recomputed."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path is not None else None
        self.entries: dict[str, dict] = {}
        self.changed = False
        if self.path is not None and self.path.is_file():
            try:
                entries = json.loads(self.path.read_text())
                self.entries = entries if isinstance(entries, dict) else {}
            except ValueError:
                logger.warning("%s is not valid JSON: the digests are computed again", self.path)

    def digest(self, file: Path) -> str:
        real = os.path.realpath(file)
        stat = os.stat(real)
        key = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        entry = self.entries.get(real)
        if entry is not None and {k: entry.get(k) for k in key} == key:
            return entry["sha256"]
        logger.info("Computing the SHA-256 of %s (%.1f GB; cached for later runs)", file, stat.st_size / 1e9)
        hasher = hashlib.sha256()
        with open(real, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                hasher.update(chunk)
        self.entries[real] = {**key, "sha256": "sha256:" + hasher.hexdigest()}
        self.changed = True
        return self.entries[real]["sha256"]

    def save(self) -> None:
        if self.path is not None and self.changed:
            write_json_atomic(self.path, self.entries, indent=1)
            self.changed = False


def files_digest(files: Iterable[tuple[str, Path]], cache: DigestCache) -> str | None:
    """One digest over (label, file digest) pairs in label order; None when there is no file."""
    pairs = sorted((label, cache.digest(path)) for label, path in files)
    return json_digest(pairs) if pairs else None


# ---- the model -----------------------------------------------------------------------------------------------------


def _weight_files(folder: Path, label: str = "") -> list[tuple[str, Path]]:
    return [
        (label + p.name, p)
        for p in sorted(folder.iterdir())
        if p.is_file() and p.suffix in WEIGHT_SUFFIXES and p.name not in NOT_WEIGHTS
    ]


# Base weight files a config may name, and the weights they provide (loading reads a file only when the checkpoint
# lacks all of its weights: etchat.model.loading._load_base_weights).
BASE_FILE_PREFIXES = {
    "pretrain_vision_tower": ("model.vision_tower.",),
    "pretrain_qformer": ("model.qformer_bert.", "model.qformer_ln.", "model.qformer_query"),
    "pretrain_projector": (
        "model.qformer_proj",
        "model.qformer_q_proj",
        "model.qformer_k_proj",
        "model.qformer_v_proj",
    ),
}


def _weight_names(files: list[tuple[str, Path]]) -> set[str]:
    """Names of the weights in the safetensors files among ``files`` (their headers only)."""
    from safetensors import safe_open

    names = set()
    for _, path in files:
        if path.suffix == ".safetensors":
            with safe_open(path, "pt") as handle:
                names |= {key.removeprefix("base_model.model.") for key in handle.keys()}
    return names


def checkpoint_files(folder: str | os.PathLike) -> tuple[list[tuple[str, Path]], list[tuple[str, Path]], dict]:
    """(weight files, config and tokenizer files, config) that loading the checkpoint in ``folder`` reads: its own
    weights, those of the base a partial checkpoint names, and the base ``.pth`` files its config names for weights
    the checkpoint does not hold."""
    from etchat.hub import resolve_file, resolve_model
    from etchat.model.loading import ADAPTER_FILE, PARTIAL_FILE

    folder = Path(folder)
    config_path = folder / "config.json"
    try:
        config = json.loads(config_path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"{config_path}: cannot read the checkpoint's config ({error})") from error
    weights = _weight_files(folder)
    configs = [(p.name, p) for p in (folder / name for name in CONFIG_FILES) if p.is_file()]
    if (folder / ADAPTER_FILE).is_file() or (folder / PARTIAL_FILE).is_file():
        base_name = config.get("model_name_or_path")
        if base_name:
            base = resolve_model(base_name, config.get("model_revision"), relative_to=str(folder)).path
            weights += _weight_files(Path(base), "base/")
    held = _weight_names(weights) if any(config.get(key) for key in BASE_FILE_PREFIXES) else set()
    for key, prefixes in BASE_FILE_PREFIXES.items():
        if config.get(key) and not any(name.startswith(prefixes) for name in held):
            try:
                weights.append((f"{key}/{os.path.basename(config[key])}", Path(resolve_file(config[key], str(folder)))))
            except FileNotFoundError:
                pass  # loading names the missing file
    return weights, configs, config


def describe_model(name: str, revision: str | None, cache: DigestCache) -> tuple[dict, dict]:
    """The ``model`` entry of a run record for a checkpoint folder or Hub repo id, and the checkpoint's config."""
    from etchat.hub import resolve_model

    resolved = resolve_model(name, revision)
    weights, configs, config = checkpoint_files(resolved.path)
    entry = {
        "name": name,
        "revision": resolved.commit,
        "weights_digest": files_digest(weights, cache),
        "config_digest": files_digest(configs, cache),
    }
    return entry, config


def describe_loaded_model(model, name: str) -> tuple[dict, dict]:
    """The ``model`` entry for a model given in memory (tests, notebooks): digests of its tensors and its config."""
    import torch

    hasher = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        hasher.update(f"{key}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    config = model.config.to_dict()
    entry = {
        "name": name,
        "revision": None,
        "weights_digest": "sha256:" + hasher.hexdigest(),
        "config_digest": json_digest([config, model.generation_config.to_dict()]),
    }
    return entry, config


# ---- the record ----------------------------------------------------------------------------------------------------


def environment(device: str) -> dict:
    import torch
    import transformers

    return {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def build_record(benchmark: str, model: dict, settings: dict, device: str) -> dict:
    return {
        "format": RUN_FORMAT,
        "benchmark": benchmark,
        "model": model,
        "settings": settings,
        "project_version": project_version(),
        "environment": environment(device),
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def fingerprint(record: dict) -> dict:
    """What an answer depends on: the benchmark, the model's bytes (its name and revision only when there are no
    bytes to digest, e.g. an API endpoint) and the settings. The project version, the environment and the time are
    recorded but not compared (docs/design.md §13 says why)."""
    model = dict(record.get("model") or {})
    if model.get("weights_digest"):
        model = {key: model.get(key) for key in ("weights_digest", "config_digest")}
    return {"benchmark": record.get("benchmark"), "model": model, "settings": record.get("settings")}


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        flat = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _short(value) -> str:
    text = json.dumps(value)
    return text[:19] + "..." if isinstance(value, str) and value.startswith("sha256:") else text


def differences(old: dict, new: dict) -> list[str]:
    """What differs between the fingerprints of two run records, as ``key: old -> new`` texts."""
    before, after = _flatten(fingerprint(old)), _flatten(fingerprint(new))
    return [
        f"{key} {_short(before.get(key))} -> {_short(after.get(key))}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


# ---- the folder ----------------------------------------------------------------------------------------------------


def stem_outputs(pred_path: Path, stem: str) -> list[Path]:
    """The files a run of ``stem`` wrote in ``pred_path``: final files and journals of every shard layout."""
    from etchat.eval.results import JOURNAL_DIR, is_shard_of

    finals = [p for p in pred_path.glob(f"{stem}*.json") if is_shard_of(stem, p.stem)]
    journals = [p for p in (pred_path / JOURNAL_DIR).glob(f"{stem}*.jsonl") if is_shard_of(stem, p.stem)]
    return sorted(finals + journals)


def _reset(pred_path: Path, stem: str, own_lock: Path | None) -> None:
    """Remove what an earlier run and its scoring wrote, refusing while one of its shards still runs."""
    running = [(path, holder) for path, holder in live_locks(pred_path, ".*.lock") if path != own_lock]
    running = [(path, holder) for path, holder in running if path.name != RUN_LOCK_FILE]
    if running:
        path, holder = running[0]
        raise RunMismatchError(
            f"{pred_path}: --overwrite cannot replace a run that is still running ({describe(holder)}, lock {path})"
        )
    removed = stem_outputs(pred_path, stem)
    removed += [p for p in (pred_path / name for name in (*SCORING_OUTPUTS, RUN_FILE)) if p.is_file()]
    for path in removed:
        path.unlink()
    if (pred_path / "plots").is_dir():
        shutil.rmtree(pred_path / "plots")
    logger.warning("--overwrite: removed %d files of the earlier run in %s", len(removed), pred_path)


def claim_run_folder(
    pred_path: str | os.PathLike, stem: str, record: dict, overwrite: bool = False, own_lock: Path | None = None
) -> dict:
    """Make ``pred_path`` the folder of the run described by ``record``; returns the folder's run record.

    An empty folder gets ``record`` as its run.json. A folder whose run.json has the same fingerprint is resumed
    (its record is kept). Otherwise, a folder with another run's answers, or answers of unknown origin (no run.json),
    is refused with one line, unless ``overwrite``, which removes the earlier run's files first (and refuses while
    that run still has a live shard). Done under a lock, so shards starting together agree.
    """
    pred_path = Path(pred_path)
    pred_path.mkdir(parents=True, exist_ok=True)
    with FileLock(pred_path / RUN_LOCK_FILE, f"the run record of {pred_path}"):
        existing = read_run_record(pred_path)
        if existing is not None:
            diffs = differences(existing, record)
            if not diffs:
                if existing.get("project_version") != record["project_version"]:
                    logger.warning(
                        "%s was started by version %s of this project, resumed by %s",
                        pred_path,
                        existing.get("project_version"),
                        record["project_version"],
                    )
                return existing
            why = f"holds answers of another run ({'; '.join(diffs)})"
        elif stem_outputs(pred_path, stem):
            why = f"holds {stem} answers without a {RUN_FILE} saying what made them"
        else:
            why = None
        if why is not None:
            if not overwrite:
                raise RunMismatchError(
                    f"{pred_path} {why}: pass --overwrite to replace them, or give another --pred_path"
                )
            _reset(pred_path, stem, own_lock)
        write_json_atomic(pred_path / RUN_FILE, record, indent=2)
        return record
