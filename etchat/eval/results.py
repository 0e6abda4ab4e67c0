"""Result files of the inference scripts: sharding, a crash-safe journal, and the final prediction file.

Every answer is appended to a JSON-lines journal as soon as it exists (flushed and fsync'd), so a run that dies loses
at most the sample in flight. A rerun reads the journals and skips the samples already answered; the final
prediction file (the published layout, one JSON list per shard) is written atomically at the end.

Layout for shard ``i`` of ``k`` of a run named ``stem`` (``etbench``, ``charades_sta``)::

    <pred_dir>/run.json                   what produced the answers (`etchat.eval.run_record`)
    <pred_dir>/<stem>_<i>.json            final predictions (``<stem>.json`` when k = 1)
    <pred_dir>/journal/<stem>_<i>.jsonl   the journal; each record also holds ``input_digest``, the digest of the
                                          inputs its answer depends on, so that a changed sample is answered again
    <pred_dir>/.<stem>_<i>.lock           held while the shard runs (`etchat.locking`)

The journals live in a subfolder because the scorers read every ``.json``/``.jsonl`` file of the prediction folder;
the journal would otherwise count every sample twice. Journals of every shard layout are read on resume, so a run
restarted with another number of processes still skips what any earlier process finished.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from etchat.io import read_jsonl, write_json_atomic

logger = logging.getLogger(__name__)

JOURNAL_DIR = "journal"
# Journal records carry the digest of the inputs their answer depends on (docs/design.md §13); final records do not.
INPUT_DIGEST = "input_digest"


def shard(items: Sequence, chunk: int, index: int) -> list:
    """Shard ``index`` of ``chunk``: items ``index, index + chunk, index + 2 * chunk, ...``."""
    if chunk < 1 or not 0 <= index < chunk:
        raise ValueError(f"shard index must satisfy 0 <= index < chunk, got index {index} and chunk {chunk}")
    return list(items[index::chunk])


def shard_name(stem: str, chunk: int, index: int) -> str:
    """File stem of shard ``index`` of ``chunk``: ``stem_{index}``, or ``stem`` for a single shard."""
    return f"{stem}_{index}" if chunk > 1 else stem


def drop_unfinished_line(path: Path) -> None:
    """Cut a last line left without its newline by a crash, so that the next record starts on a line of its own."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        logger.warning("%s: dropping an unfinished last line (%d bytes)", path, len(data) - keep)
        f.truncate(keep)


class ResultStore:
    """Journal and final file of one shard; ``key_fn(record)`` names a sample stably across runs."""

    def __init__(self, pred_dir: str | os.PathLike, stem: str, chunk: int, index: int, key_fn: Callable[[dict], str]):
        self.pred_dir = Path(pred_dir)
        self.stem = stem
        self.key_fn = key_fn
        name = shard_name(stem, chunk, index)
        self.final_path = self.pred_dir / f"{name}.json"
        self.journal_path = self.pred_dir / JOURNAL_DIR / f"{name}.jsonl"
        self._journal_checked = False

    def journal_files(self) -> list[Path]:
        folder = self.journal_path.parent
        if not folder.is_dir():
            return []
        return sorted(p for p in folder.glob(f"{self.stem}*.jsonl") if is_shard_of(self.stem, p.stem))

    def load(self, retry_errors: bool = True) -> dict[str, dict]:
        """key -> latest journal record of every sample answered by an earlier run (of any shard layout).

        With ``retry_errors`` a sample whose latest record carries an ``error`` counts as not done.
        """
        done: dict[str, dict] = {}
        for path in self.journal_files():
            for record in read_jsonl(path):
                done[self.key_fn(record)] = record
        if retry_errors:
            done = {key: record for key, record in done.items() if "error" not in record}
        return done

    def append(self, record: dict, input_digest: str | None = None) -> None:
        """Journal ``record``, with the digest of the inputs its answer depends on when given."""
        if input_digest is not None:
            record = {**record, INPUT_DIGEST: input_digest}
        if not self._journal_checked:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            drop_unfinished_line(self.journal_path)
            self._journal_checked = True
        with open(self.journal_path, "a") as f:
            f.write(json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_final(self, records: list[dict]) -> None:
        records = [{k: v for k, v in record.items() if k != INPUT_DIGEST} for record in records]
        write_json_atomic(self.final_path, records)
        logger.info("Wrote %d predictions to %s", len(records), self.final_path)

    def other_layouts(self, chunk: int) -> list[Path]:
        """Final files of this stem written with another number of shards."""
        expected = {f"{shard_name(self.stem, chunk, i)}.json" for i in range(chunk)}
        candidates = self.pred_dir.glob(f"{self.stem}*.json")
        return sorted(p for p in candidates if is_shard_of(self.stem, p.stem) and p.name not in expected)

    def remove_other_layouts(self, chunk: int) -> list[Path]:
        """Delete the final files of another shard layout: a scorer reading the folder would count their samples
        twice, and nothing is lost, since their records are in the journals that every layout resumes from."""
        stale = self.other_layouts(chunk)
        for path in stale:
            logger.warning(
                "removing %s: it is from a run with another number of shards (its answers are kept in the journal)",
                path,
            )
            path.unlink(missing_ok=True)
        return stale


def final_files(path: str | os.PathLike, stem: str) -> list[Path]:
    """``path`` itself, or the final prediction files of the folder ``path`` (``<stem>.json``, ``<stem>_<i>.json``)
    in name order; other files there (a submission, metrics.json) are not read."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.glob(f"{stem}*.json") if is_shard_of(stem, p.stem))
        if not files:
            raise FileNotFoundError(f"no {stem}.json or {stem}_<i>.json prediction files in {path}")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"file or folder not found: {path}")
    return [path]


def is_shard_of(stem: str, name: str) -> bool:
    return name == stem or (name.startswith(stem + "_") and name[len(stem) + 1 :].isdigit())
