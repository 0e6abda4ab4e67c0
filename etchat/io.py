"""Reading and writing the project's JSON files: atomic writers, and one reader for "a file or a folder of them".

Annotation files, prediction files and journals are JSON lists (``.json``) or one object per line (``.jsonl``). A
command that takes a folder reads its ``.json``/``.jsonl`` files in name order and concatenates them; hidden files,
the ``metrics.json`` a scorer writes next to the predictions and the ``run.json`` inference writes there are not
records and are skipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import struct
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

RECORD_SUFFIXES = (".json", ".jsonl")
METRICS_FILE = "metrics.json"
RUN_FILE = "run.json"  # what produced a prediction folder (etchat.eval.run_record)
NOT_RECORDS = (METRICS_FILE, RUN_FILE)
TEMP_SUFFIX = ".tmp"
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


def _default_file_mode() -> int:
    # mkstemp creates files readable by their owner only; finished files get the mode open() would give them.
    try:
        with open("/proc/self/status") as f:
            umask = next(int(line.split()[1], 8) for line in f if line.startswith("Umask:"))
    except (OSError, StopIteration, ValueError):  # not Linux: read it the racy way
        umask = os.umask(0o022)
        os.umask(umask)
    return 0o666 & ~umask


def give_default_modes(folder: str | os.PathLike) -> list[Path]:
    """Give the files under ``folder`` that only their owner may read (the safetensors writer under
    ``save_pretrained`` creates them 0600) the mode ``open()`` gives new files (0644 under the default umask), so
    that colleagues on a shared cluster can read a checkpoint. Returns the files changed."""
    mode = _default_file_mode()
    changed = []
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file() and not path.is_symlink():
            current = path.stat().st_mode & 0o777
            if current != mode and current & ~0o700 == 0:  # owner-only: not a mode someone chose to open up
                os.chmod(path, mode)
                changed.append(path)
    return changed


def temp_path_for(path: Path) -> Path:
    """A new, empty temporary file next to ``path`` (hidden, named after it), to be renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    os.close(fd)
    return Path(tmp)


def replace_atomic(tmp: Path, path: Path) -> None:
    """Give ``tmp`` the usual file mode and rename it over ``path``."""
    os.chmod(tmp, _default_file_mode())
    os.replace(tmp, path)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to ``path`` to write to: when the block ends without an error it is renamed over
    ``path`` with the usual file mode, otherwise deleted, so ``path`` is whole or untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(path)
    try:
        yield tmp
        replace_atomic(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _atomic_text_file(path: str | os.PathLike):
    """A text file opened for writing that appears at ``path`` whole (fsynced before the rename), or not at all."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename, so readers never see half a file.

    NaN and infinity are refused (they are not JSON): callers turn them into errors or nulls first.
    """
    with _atomic_text_file(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent, allow_nan=False)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path``, atomically like `write_json_atomic`."""
    with _atomic_text_file(path) as f:
        f.write(text)


def write_jsonl_atomic(path: str | os.PathLike, records: list) -> None:
    """Write one JSON object per line to ``path``, atomically like `write_json_atomic`."""
    with _atomic_text_file(path) as f:
        f.writelines(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n" for record in records)


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an interrupted atomic write left in ``folder`` (a kill between the write and the
    rename); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.glob(f".*{TEMP_SUFFIX}") if p.is_file())
    for path in stale:
        logger.warning("removing %s, left by an interrupted write", path)
        path.unlink(missing_ok=True)
    return stale


def is_finite_number(value) -> bool:
    """Whether a value read from JSON is a finite number (not a bool, NaN or an infinity)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def without_non_finite(value):
    """``value`` with every NaN or infinite float replaced by None (JSON has no such numbers)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: without_non_finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [without_non_finite(item) for item in value]
    return value


def read_json_without_conflicts(path: str | os.PathLike) -> tuple[object, int]:
    """A JSON file whose objects may not hold a key twice with different values (``json`` would silently keep the
    last one): such a key is a ValueError naming it and the file. Returns the data and how many keys were written
    twice with the same value (kept once)."""
    repeats = 0

    def pairs_hook(pairs):
        nonlocal repeats
        obj = {}
        for key, value in pairs:
            if key in obj:
                if obj[key] != value:
                    raise ValueError(f"{path}: key {key!r} appears twice with different values: remove the stale one")
                repeats += 1
                continue
            obj[key] = value
        return obj

    try:
        return json.loads(Path(path).read_text(), object_pairs_hook=pairs_hook), repeats
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error


def read_jsonl(path: str | os.PathLike, tolerate_cut_tail: bool = True) -> list[dict]:
    """Records of a JSON-lines file. A last line cut short by a crash is skipped with a warning (or an error when
    ``tolerate_cut_tail`` is off); a broken line elsewhere is an error naming the file and the line."""
    lines = Path(path).read_text().splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            if number == len(lines) and tolerate_cut_tail:
                logger.warning("%s: skipping the unfinished last line %d (%s)", path, number, error)
                continue
            raise ValueError(f"{path}: line {number} is not valid JSON ({error})") from error
    return records


def record_files(path: str | os.PathLike, suffixes: tuple[str, ...] = RECORD_SUFFIXES) -> list[Path]:
    """``path`` itself, or the record files of the folder ``path`` in name order (hidden files and metrics.json left
    out, and run.json). A missing path, an empty folder or a file of another type is an error naming it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix in suffixes and not p.name.startswith(".") and p.name not in NOT_RECORDS
        )
        if not files:
            raise FileNotFoundError(f"no {'/'.join(suffixes)} files in {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"file or folder not found: {path}")
    if path.suffix not in suffixes:
        raise ValueError(f"{path}: expected a {' or '.join(suffixes)} file, or a folder of them")
    return [path]


def read_records(path: str | os.PathLike) -> list[dict]:
    """The objects of one ``.json`` list or ``.jsonl`` file; anything else is an error naming the file."""
    path = Path(path)
    if path.suffix == ".jsonl":
        records = read_jsonl(path, tolerate_cut_tail=False)
    else:
        try:
            records = json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON list of objects, got {type(records).__name__}")
    for position, record in enumerate(records):
        if not isinstance(record, dict):
            raise ValueError(f"{path}: entry #{position} is not a JSON object")
    return records


def load_records(path: str | os.PathLike, suffixes: tuple[str, ...] = RECORD_SUFFIXES) -> list[dict]:
    """The records of a file, or of every record file of a folder, concatenated in name order."""
    return [record for file in record_files(path, suffixes) for record in read_records(file)]


# ---- whole or not: cheap checks of files a crash may have cut short ----------------------------------------------


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole (its header names more bytes than the file has), or None."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return "shorter than a safetensors header"
        (header_size,) = struct.unpack("<Q", head)
        if 8 + header_size > size:
            return f"truncated ({size} bytes, its header alone needs {8 + header_size})"
        try:
            header = json.loads(f.read(header_size))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "its header is not valid JSON"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + header_size + max(ends, default=0)
    return f"truncated ({size} of {expected} bytes)" if size < expected else None


def torch_file_problem(path: Path) -> str | None:
    """Why a torch.save file is not whole, or None. Files in the legacy (non-zip) format are not checked."""
    with open(path, "rb") as f:
        if f.read(2) != b"PK":
            return None if path.stat().st_size > 0 else "empty"
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        return f"not a whole torch file ({error})"
    return None


def file_problem(path: Path) -> str | None:
    if path.suffix == ".json":
        try:
            json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            return f"not valid JSON ({error})"
        return None
    if path.suffix == ".safetensors":
        return safetensors_problem(path)
    if path.suffix in TORCH_SUFFIXES:
        return torch_file_problem(path)
    return None
