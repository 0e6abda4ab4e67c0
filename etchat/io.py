"""Reading and writing the project's JSON files: atomic writers, and one reader for "a file or a folder of them".

Annotation files, prediction files and journals are JSON lists (``.json``) or one object per line (``.jsonl``). A
command that takes a folder reads its ``.json``/``.jsonl`` files in name order and concatenates them; hidden files and
the ``metrics.json`` a scorer writes next to the predictions are not records and are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

logger = logging.getLogger(__name__)

RECORD_SUFFIXES = (".json", ".jsonl")
METRICS_FILE = "metrics.json"


@contextmanager
def _atomic_text_file(path: str | os.PathLike):
    """A text file opened for writing that appears at ``path`` whole (temporary file, fsync, rename), or not at all."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json_atomic(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    """Write ``obj`` as JSON to ``path`` through a temporary file and a rename, so readers never see half a file."""
    with _atomic_text_file(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=indent)


def write_jsonl_atomic(path: str | os.PathLike, records: list) -> None:
    """Write one JSON object per line to ``path``, atomically like `write_json_atomic`."""
    with _atomic_text_file(path) as f:
        f.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)


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
    out). A missing path, an empty folder or a file of another type is an error naming it."""
    path = Path(path)
    if path.is_dir():
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file() and p.suffix in suffixes and not p.name.startswith(".") and p.name != METRICS_FILE
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
