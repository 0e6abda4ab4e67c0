"""Fetch the base weights of E.T. Chat into `model_zoo/` (docs/design.md §7).

    python -m etchat.download                      # all three into model_zoo/
    python -m etchat.download eva_vit_g.pth --model_zoo /shared/model_zoo --mirror http://mirror.local/lavis/

- `Phi-3-mini-4k-instruct/`: microsoft/Phi-3-mini-4k-instruct from the Hugging Face Hub, through huggingface_hub's
  cache (resumable; `HF_HOME`, `HF_HUB_CACHE`, `HF_ENDPOINT` and `HF_HUB_OFFLINE` apply), then hard-linked into
  `model_zoo/` (copied when the cache is on another file system);
- `eva_vit_g.pth`, `instruct_blip_vicuna7b_trimmed.pth`: from their published URLs (`etchat.hub.PUBLISHED_FILES`), or
  from `--mirror`: an http(s):// or file:// folder URL, or a local folder, holding the same file names.

Each item is written under `<name>.part`, checked by reading its weight names and shapes against the published key
lists shipped in `etchat/model/keys/`, and only then renamed: a name without `.part` in `model_zoo/` is whole and
checked. A cut transfer resumes where it stopped (an HTTP range request), within the run (`--retries`, waiting 2,
4, 8, ... s between attempts) or in the next run. An item already in place is checked and kept. Two downloads into
one `model_zoo/` at once do not write the same item: the second waits for nothing and says which process has it.
`--model_zoo` defaults to the repository's `model_zoo/` (where the launchers and released configs look), whatever the
current folder; every message names the absolute path. The exit status is 1 when any item failed, each named in the
log, and 2 for a --mirror that is neither a folder nor a URL.
"""

from __future__ import annotations

import argparse
import http.client
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from time import sleep
from urllib.error import HTTPError
from urllib.parse import urlparse
from urllib.request import Request, url2pathname, urlopen

from tqdm import tqdm

from etchat.cli import setup_logging
from etchat.hub import PHI3_REPO, PUBLISHED_FILES, ModelNotFoundError, fetch_snapshot
from etchat.locking import FileLock, LockHeldError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
PART_SUFFIX = ".part"
BACKOFF_S = 2.0  # the wait before retry n is BACKOFF_S x 2^(n-1) seconds, at most MAX_BACKOFF_S
MAX_BACKOFF_S = 60.0
# The repository's model_zoo/ when running from a checkout (the folder the launchers and released configs name).
REPO_MODEL_ZOO = Path(__file__).resolve().parents[1] / "model_zoo"
# Phi-3's own weights within the E.T. Chat key list.
PHI3_PREFIXES = ("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head.")


class DownloadError(RuntimeError):
    """A transfer that could not be completed."""


class KeyCheckError(ValueError):
    """Weights whose names or shapes differ from the published key list."""


@dataclass(frozen=True)
class BaseWeight:
    name: str  # file or folder name in model_zoo/
    key_list: str  # file in etchat/model/keys/
    key_prefixes: tuple[str, ...] = ()  # only these keys of the list, when set

    def expected_keys(self) -> dict[str, tuple[int, ...]]:
        keys = read_key_list(self.key_list)
        return {k: v for k, v in keys.items() if not self.key_prefixes or k.startswith(self.key_prefixes)}


PHI3 = BaseWeight(PHI3_REPO.split("/")[1], "etchat_phi3_full.tsv", PHI3_PREFIXES)
EVA_VIT = BaseWeight("eva_vit_g.pth", "eva_vit_g_pth.tsv")
QFORMER = BaseWeight("instruct_blip_vicuna7b_trimmed.pth", "instruct_blip_vicuna7b_trimmed_pth.tsv")
BASE_WEIGHTS = {weight.name: weight for weight in (PHI3, EVA_VIT, QFORMER)}


# ---- key lists ------------------------------------------------------------------------------------------------------


def read_key_list(name: str) -> dict[str, tuple[int, ...]]:
    """A published key list: one `name<TAB>(shape)` line per weight."""
    text = (resources.files("etchat") / "model" / "keys" / name).read_text()
    rows = (line.split("\t") for line in text.splitlines() if line.strip())
    return {key: tuple(int(n) for n in re.findall(r"\d+", shape)) for key, shape in rows}


def pth_keys(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a `.pth` state dict (or of its `model` entry), memory-mapped rather than read."""
    import torch

    try:
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files of the legacy (pre-zip) format cannot be memory-mapped
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a cut or foreign file fails in the unpickler in many ways
        raise KeyCheckError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from error
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else {}
    return {k: tuple(v.shape) for k, v in state.items() if isinstance(v, torch.Tensor)}


def safetensors_keys(folder: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the weights in a folder's `*.safetensors` files, read from their headers."""
    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise KeyCheckError(f"{folder}: no .safetensors files")
    keys = {}
    for file in files:
        with safe_open(file, "pt") as handle:
            keys.update({k: tuple(handle.get_slice(k).get_shape()) for k in handle.keys()})
    return keys


def _listed(items, limit: int = 5) -> str:
    items = sorted(items)
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_keys(path: str | os.PathLike, weight: BaseWeight) -> int:
    """Raise a KeyCheckError unless `path` holds exactly the weights of the published key list; returns their
    number."""
    found = safetensors_keys(path) if os.path.isdir(path) else pth_keys(path)
    expected = weight.expected_keys()
    missing, unexpected = expected.keys() - found.keys(), found.keys() - expected.keys()
    misshaped = [
        f"{k} {found[k]} instead of {expected[k]}" for k in expected.keys() & found.keys() if found[k] != expected[k]
    ]
    if missing or unexpected or misshaped:
        problems = [
            f"{label} [{_listed(keys)}]"
            for label, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if keys
        ]
        raise KeyCheckError(f"{path}: not the published {weight.name} ({'; '.join(problems)})")
    return len(found)


# ---- transfers ------------------------------------------------------------------------------------------------------


def part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + PART_SUFFIX)


def fetch_url(url: str, dest: Path, retries: int = 3, timeout: float = 60.0) -> Path:
    """Download `url` into `dest`'s part file, resuming what it holds; returns the part file once whole."""
    part = part_path(dest)
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, dest.name, timeout)
            return part
        except HTTPError as error:
            if error.code < 500:  # the source refuses: asking again will not help
                raise DownloadError(f"{url}: HTTP {error.code} {error.reason}") from error
            failure = error
        except (OSError, http.client.HTTPException) as error:  # URLError, timeouts and cut connections
            failure = error
        held = part.stat().st_size if part.exists() else 0
        if attempt < retries:
            wait = backoff(attempt + 1)
            retry = f"retry {attempt + 1} of {retries}"
            logger.warning("%s: %s; resuming from byte %d in %.0f s (%s)", url, failure, held, wait, retry)
            sleep(wait)
    raise DownloadError(f"{url}: {failure}; {part} keeps {held} bytes and a rerun resumes from there") from failure


def backoff(retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (1, 2, ...): doubling, capped."""
    return min(BACKOFF_S * 2 ** (retry - 1), MAX_BACKOFF_S)


def mirror_folder(mirror: str) -> Path | None:
    """The local folder a ``--mirror`` names (a folder, or a file:// URL), None for an http(s) URL; anything else is
    a DownloadError saying what a mirror may be."""
    parsed = urlparse(mirror)
    if parsed.scheme in ("http", "https") and parsed.netloc:
        return None
    folder = Path(url2pathname(parsed.path)) if parsed.scheme == "file" else Path(mirror)
    if (parsed.scheme in ("", "file")) and folder.is_dir():
        return folder
    raise DownloadError(
        f"--mirror {mirror}: neither a folder on this machine nor an http://, https:// or file:// URL of one "
        "(e.g. https://mirror.example.org/lavis/ or /data/lavis)"
    )


def copy_from_folder(folder: Path, dest: Path) -> Path:
    """Copy ``folder/<name>`` into ``dest``'s part file; returns the part file."""
    source = folder / dest.name
    if not source.is_file():
        raise DownloadError(f"{source}: no such file in the --mirror folder")
    part = part_path(dest)
    shutil.copyfile(source, part)
    return part


def _transfer(url: str, part: Path, label: str, timeout: float) -> None:
    done = part.stat().st_size if part.exists() else 0
    try:
        response = urlopen(Request(url, headers={"Range": f"bytes={done}-"} if done else {}), timeout=timeout)
    except HTTPError as error:
        if error.code == 416 and done:  # nothing left after `done`
            if _range_total(error.headers.get("Content-Range")) == done:
                return
            part.unlink()  # longer than the file: not a prefix of it
            raise ConnectionError(f"{part} does not fit the file on the server; starting again") from error
        raise
    with response:
        if done and response.status != 206:
            logger.info("%s: the server does not resume; starting again", url)
            done = 0
        elif done and _range_start(response.headers.get("Content-Range")) != done:
            part.unlink()
            raise ConnectionError(f"the server sent another range than bytes {done}-; starting again")
        total = _expected_size(response, done)
        with (
            open(part, "ab" if done else "wb") as f,
            tqdm(desc=label, total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024) as bar,
        ):
            while chunk := response.read(CHUNK_BYTES):
                f.write(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    size = part.stat().st_size
    if total is not None and size != total:
        raise ConnectionError(f"the transfer stopped at byte {size} of {total}")


def _range_start(content_range: str | None) -> int | None:
    match = re.match(r"bytes (\d+)-\d+/", content_range or "")
    return int(match.group(1)) if match else None


def _range_total(content_range: str | None) -> int | None:
    match = re.match(r"bytes [\d*-]+/(\d+)", content_range or "")
    return int(match.group(1)) if match else None


def _expected_size(response, done: int) -> int | None:
    if response.status == 206:
        return _range_total(response.headers.get("Content-Range"))
    length = response.headers.get("Content-Length")
    return int(length) if length is not None else None


def link_tree(src: str | os.PathLike, dst: Path) -> bool:
    """Hard-link every file under `src` (following the Hub cache's symlinks to its blobs) into `dst`; files on
    another file system are copied. Returns whether anything was copied."""
    copied = False
    for folder, _, files in os.walk(src, followlinks=True):
        target = dst / os.path.relpath(folder, src)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            blob = os.path.realpath(os.path.join(folder, name))
            try:
                os.link(blob, target / name)
            except OSError:
                shutil.copyfile(blob, target / name)
                copied = True
    return copied


# ---- the command ----------------------------------------------------------------------------------------------------


def fetch_phi3(dest: Path, revision: str | None) -> Path:
    """Phi-3 into the Hub cache, then linked into `dest`'s part folder; returns the part folder."""
    snapshot = fetch_snapshot(PHI3_REPO, revision, local_copy=dest).path
    part = part_path(dest)
    if part.exists():
        shutil.rmtree(part)
    if link_tree(snapshot, part):
        logger.info("%s: copied from the Hub cache %s (another file system)", dest, snapshot)
    return part


def install(weight: BaseWeight, dest: Path, mirror: str | None, revision: str | None, retries: int) -> str:
    """Fetch, check and rename one item; returns what was done. One process at a time writes an item."""
    if dest.exists():
        count = check_keys(dest, weight)
        return f"already there, {count} weights checked"
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(dest.parent / f".{dest.name}.lock", f"the download of {dest}"):
        if dest.exists():  # another process finished it while we waited for nothing
            return f"already there, {check_keys(dest, weight)} weights checked"
        return _install(weight, dest, mirror, revision, retries)


def _install(weight: BaseWeight, dest: Path, mirror: str | None, revision: str | None, retries: int) -> str:
    if weight is PHI3:
        part = fetch_phi3(dest, revision)
    elif mirror and (folder := mirror_folder(mirror)) is not None:
        logger.info("%s <- %s", dest, folder / weight.name)
        part = copy_from_folder(folder, dest)
    else:
        url = f"{mirror.rstrip('/')}/{weight.name}" if mirror else PUBLISHED_FILES[weight.name]
        logger.info("%s <- %s", dest, url)
        part = fetch_url(url, dest, retries)
    try:
        count = check_keys(part, weight)
    except KeyCheckError:
        if part.is_dir():
            shutil.rmtree(part)
        else:
            part.unlink()
        raise
    os.replace(part, dest)
    return f"downloaded, {count} weights checked"


def default_model_zoo() -> Path:
    """The repository's model_zoo/ when this runs from a checkout, else model_zoo/ in the current folder."""
    checkout = REPO_MODEL_ZOO.parent
    in_checkout = (checkout / "setup.py").is_file() and (checkout / "scripts").is_dir()
    return REPO_MODEL_ZOO if in_checkout else Path("model_zoo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.download", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"{', '.join(BASE_WEIGHTS)} (default: all three)")
    parser.add_argument(
        "--model_zoo",
        default=str(default_model_zoo()),
        help="folder the weights go to (default: the repository's model_zoo/, wherever you run this from)",
    )
    parser.add_argument("--model_revision", default=None, help=f"branch, tag or commit of {PHI3_REPO} (default: main)")
    parser.add_argument(
        "--mirror",
        default=None,
        help="where the .pth files are under their published names: an http(s):// or file:// URL, or a folder",
    )
    parser.add_argument("--retries", type=int, default=3, help="resumed attempts after a cut transfer (with backoff)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    names = args.names or list(BASE_WEIGHTS)
    unknown = [name for name in names if name not in BASE_WEIGHTS]
    if unknown:
        parser.error(f"unknown name(s) {', '.join(unknown)}; choose from {', '.join(BASE_WEIGHTS)}")
    setup_logging()
    if args.mirror:
        try:
            mirror_folder(args.mirror)
        except DownloadError as error:
            logger.error("%s", error)
            return 2
    zoo = Path(args.model_zoo).absolute()
    failed = []
    for name in names:
        dest = zoo / name
        try:
            logger.info(
                "%s: %s", dest, install(BASE_WEIGHTS[name], dest, args.mirror, args.model_revision, args.retries)
            )
        except (DownloadError, KeyCheckError, ModelNotFoundError, LockHeldError, OSError) as error:
            logger.error("%s", " ".join(str(error).split()))
            failed.append(name)
    if failed:
        logger.error("%d of %d item(s) failed: %s", len(failed), len(names), ", ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
