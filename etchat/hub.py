"""Where weights come from (docs/design.md §7): a local folder, or a Hugging Face Hub repo fetched into the Hub cache;
and, in one place, the published sources of E.T. Chat's weights.

`resolve_model(name)` gives the local folder of a model name, trying in order:

1. an existing folder: as given, else relative to the folders above `relative_to` (released configs name their base
   as `model_zoo/...` relative to the repository);
2. a published `model_zoo/` folder that is absent (`model_zoo/Phi-3-mini-4k-instruct`): the Hub repo it came from;
3. a Hub repo id (`org/name`): `huggingface_hub.snapshot_download` into the Hub cache (`HF_HOME`, `HF_HUB_CACHE`),
   which resumes cut downloads and, under `HF_HUB_OFFLINE=1`, reads the cache only. `revision` is a branch, a tag or
   a commit.

A name that is none of these is a `ModelNotFoundError` with one line saying why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)

PHI3_REPO = "microsoft/Phi-3-mini-4k-instruct"
ETCHAT_REPOS = tuple(f"PolyU-ChenLab/ETChat-Phi3-Mini-Stage-{stage}" for stage in ("1", "2", "3", "2-3"))
# The name of a published model's folder in `model_zoo/` -> its Hub repo.
PUBLISHED_REPOS = {repo.split("/")[1]: repo for repo in (PHI3_REPO, *ETCHAT_REPOS)}
_LAVIS = "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models"
PUBLISHED_FILES = {
    "eva_vit_g.pth": f"{_LAVIS}/BLIP2/eva_vit_g.pth",
    "instruct_blip_vicuna7b_trimmed.pth": f"{_LAVIS}/InstructBLIP/instruct_blip_vicuna7b_trimmed.pth",
}
# What loading reads from a model repo: configs, safetensors weights, tokenizer files. Repos also hold duplicate
# weights in other formats, and code that this project never runs.
MODEL_FILES = ("*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken")
DOWNLOAD_HINT = "python -m etchat.download"


class ModelNotFoundError(FileNotFoundError):
    """A model name that is neither a folder here nor a Hub repo that can be had."""


@dataclass(frozen=True)
class ResolvedModel:
    path: str  # the local folder to load from
    repo_id: str | None = None  # the Hub repo it was fetched from
    commit: str | None = None  # the commit of that repo's snapshot


def resolve_path(path: str, relative_to: str | None = None) -> str:
    """`path` as given when it exists (or is absolute), else relative to the first folder above `relative_to` that
    holds it; unchanged when none does."""
    if os.path.isabs(path) or os.path.exists(path) or relative_to is None:
        return path
    folder = os.path.abspath(relative_to)
    while True:
        candidate = os.path.join(folder, path)
        if os.path.exists(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return path
        folder = parent


def resolve_model(
    name: str,
    revision: str | None = None,
    relative_to: str | None = None,
    allow_patterns: tuple[str, ...] = MODEL_FILES,
) -> ResolvedModel:
    """The local folder of `name`: a folder, or a Hub repo id fetched into the Hub cache (see the module's doc)."""
    path = resolve_path(name, relative_to)
    if os.path.isdir(path):
        if revision:
            logger.warning("%s is a local folder: revision %s is ignored", path, revision)
        return ResolvedModel(path)
    if os.path.exists(path):
        raise ModelNotFoundError(f"{name}: not a folder")
    repo_id = published_repo(name) or hub_repo_id(name)
    if repo_id is None:
        raise ModelNotFoundError(f"{name}: no such checkpoint folder")
    if repo_id != name:
        logger.info("%s is absent: using %s from the Hugging Face Hub", name, repo_id)
    local_copy = os.path.abspath(name) if repo_id != name else None
    return fetch_snapshot(repo_id, revision, allow_patterns, asked_for=name, local_copy=local_copy)


def published_repo(name: str) -> str | None:
    """The Hub repo of a published `model_zoo/` folder name (`model_zoo/Phi-3-mini-4k-instruct`)."""
    repo_id = PUBLISHED_REPOS.get(os.path.basename(os.path.normpath(name)))
    return repo_id if repo_id and name != repo_id else None


def hub_repo_id(name: str) -> str | None:
    """`name` when it can be a Hub repo id (`org/name`, not a path such as `./x/y` or `/x/y`), else None."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    if name.count("/") != 1 or name.startswith((".", "/", "~")):
        return None
    try:
        validate_repo_id(name)
    except HFValidationError:
        return None
    return name


def fetch_snapshot(
    repo_id: str,
    revision: str | None,
    allow_patterns: tuple[str, ...] = MODEL_FILES,
    asked_for: str | None = None,
    local_copy: str | os.PathLike | None = None,
) -> ResolvedModel:
    """`snapshot_download` of `repo_id` at `revision`, its errors worded as one line naming what was asked for.
    ``local_copy`` is the folder a copy of the repo's files would be used from, named when the Hub cannot help."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    asked_for = asked_for or repo_id
    at = f" at revision {revision}" if revision else ""
    try:
        path = snapshot_download(repo_id, revision=revision, allow_patterns=list(allow_patterns))
    except RevisionNotFoundError as error:
        raise ModelNotFoundError(f"{asked_for}: the Hub repo {repo_id} has no revision {revision}") from error
    except RepositoryNotFoundError as error:
        raise ModelNotFoundError(
            f"{asked_for}: no such folder, nor a Hub repo you can access ({repo_id}: {type(error).__name__})"
        ) from error
    except LocalEntryNotFoundError as error:
        why = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "the Hub could not be reached"
        hint = f"; put a copy of the files of {repo_id} in {local_copy}" if local_copy else ""
        if local_copy and repo_id == PHI3_REPO:
            hint += f" (`{DOWNLOAD_HINT}` makes it on a machine that reaches the Hub)"
        raise ModelNotFoundError(
            f"{asked_for}: no such folder, and the Hub repo {repo_id}{at} is not in the Hub cache "
            f"{constants.HF_HUB_CACHE} ({why}){hint}"
        ) from error
    commit = os.path.basename(path) if os.path.basename(os.path.dirname(path)) == "snapshots" else None
    logger.info("%s%s: %s", repo_id, at, path)
    return ResolvedModel(path, repo_id, commit)


def resolve_file(path: str, relative_to: str | None = None) -> str:
    """A base weight file (`model_zoo/eva_vit_g.pth`); a missing published one is an error naming the command that
    fetches it."""
    resolved = resolve_path(path, relative_to)
    if os.path.isfile(resolved):
        return resolved
    url = PUBLISHED_FILES.get(os.path.basename(path))
    hint = f"; `{DOWNLOAD_HINT}` fetches it from {url}" if url else ""
    raise FileNotFoundError(f"{path}: no such file{hint}")
