"""One contract for every scorer's command line (docs/design.md §13): E.T. Bench (``compute_metrics.py``,
``python -m etchat.eval.etbench``), Charades-STA, QVHighlights and dense captioning.

A scorer describes itself as a `Scorer`: its argument parser (`add_scoring_args` adds the shared flags), where its
scores go, which files it reads, and a ``score(args, report)`` function that returns the metric layout and counts
what was wrong with its inputs in ``report`` (an `InputReport`). `run_scorer` does the rest, the same way for all:

* the old ``metrics.json`` (or ``--out``) is removed before anything is read, and the new one is written atomically
  with ``input_report`` as its last key, so a scores file that exists is complete and belongs to the last run;
* bad input (a missing or malformed file, conflicting copies of a sample, an impossible option, a full disk) is one
  line on stderr, ``<prog>: error: <why>``, and exit status 2;
* samples lost (absent from the predictions, or failed in inference) are scored as failures and counted, and the exit
  status is 1 with one line saying how many and why, unless ``--allow_errors``;
* a sample found twice is counted once when both copies are identical, and refused naming both places when they
  differ (`unique_records`, `load_json_objects`);
* one process scores a folder at a time (a lock next to the scores file); with ``--once`` (the multi-node
  launchers) a process leaves the scoring to another that is scoring the same inputs, and skips inputs whose scores
  are already written.

Logging goes to stdout only; a scorer that keeps a log file (E.T. Bench's ``metrics.log``) writes it whole at the end,
so that a full disk fails once, in one line.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from etchat.io import read_json_without_conflicts, remove_stale_temp_files, write_json_atomic
from etchat.locking import FileLock, LockHeldError, describe
from etchat.version import project_version

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_LOST, EXIT_BAD_INPUT = 0, 1, 2
REPORT_KEY = "input_report"
SCORED_INPUTS_SUFFIX = ".inputs"  # hidden sidecar ``.<scores file>.inputs``: the digest of what was scored
LOCK_SUFFIX = ".lock"


class ScoringExit(SystemExit):
    """The end of a scoring command with a non-zero status; ``str()`` is the one line printed on stderr."""

    def __init__(self, code: int, line: str):
        super().__init__(code)
        self.line = line

    def __str__(self) -> str:
        return self.line


@dataclass
class InputReport:
    """What was wrong with a scorer's inputs, in numbers: the ``input_report`` of every metrics.json.

    ``lost`` samples have no usable prediction at all (absent from the predictions, or their inference failed):
    they are scored as failures, and they make the exit status 1 unless ``--allow_errors``. ``unparsable`` answers
    exist but give no prediction (scored as failures, as the official scorers do). ``duplicates`` are identical
    copies of a sample, counted once. ``details`` holds a scorer's own counts, written after the shared ones.
    """

    samples: int = 0  # samples (queries, videos) the scores are over
    lost: int = 0
    failed_inference: int = 0  # records whose inference failed (field 'error')
    missing: int = 0  # samples of the ground truth absent from the predictions
    unparsable: int = 0
    duplicates: int = 0
    details: dict = field(default_factory=dict)
    lost_examples: list[str] = field(default_factory=list)  # names of the first lost samples, for the message

    def counts(self) -> dict:
        shared = {
            "samples": self.samples,
            "lost": self.lost,
            "failed_inference": self.failed_inference,
            "missing": self.missing,
            "unparsable": self.unparsable,
            "duplicates": self.duplicates,
        }
        return {**shared, **{key: value for key, value in self.details.items() if key not in shared}}

    def count_failed(self, records: list[dict], key_fn: Callable[[dict], str]) -> list[dict]:
        """Count the records whose inference failed as lost; returns them."""
        failed = [record for record in records if "error" in record]
        self.failed_inference += len(failed)
        self.lost += len(failed)
        self.lost_examples += [key_fn(record) for record in failed[:3]]
        return failed

    def lost_line(self) -> str | None:
        if not self.lost:
            return None
        parts = []
        if self.failed_inference:
            parts.append(f"{self.failed_inference} failed in inference")
        if self.missing:
            parts.append(f"{self.missing} absent from the predictions")
        examples = f" (e.g. {', '.join(map(str, self.lost_examples[:3]))})" if self.lost_examples else ""
        return (
            f"{self.lost} of {self.samples} samples were lost: {', '.join(parts)}{examples}; they are scored as "
            "failures, so these scores are a lower bound. Rerun inference to answer them, or pass --allow_errors to "
            "accept the scores as they are"
        )


# ---- duplicates ------------------------------------------------------------------------------------------------------


def unique_records(
    files: list[tuple[Path, list[dict]]], key_fn: Callable[[dict], str], report: InputReport | None = None
) -> list[dict]:
    """The records of several prediction files with each sample once.

    A sample that appears twice with the same content (e.g. a file copied) is kept once and counted in
    ``report.duplicates``; twice with different content is an error naming both places, since scoring either copy, or
    both, would be a guess.
    """
    seen: dict[str, tuple[Path, int, dict]] = {}
    records = []
    for path, file_records in files:
        for position, record in enumerate(file_records):
            key = key_fn(record)
            if key not in seen:
                seen[key] = (path, position, record)
                records.append(record)
                continue
            first_path, first_position, first = seen[key]
            where = (
                f"{first_path} and {path}"
                if first_path != path
                else f"{path} (entries #{first_position} and #{position})"
            )
            if first != record:
                raise ValueError(f"sample {key} is in {where} with different contents: remove the stale copy")
            logger.warning("sample %s is in %s with the same contents: scored once", key, where)
            if report is not None:
                report.duplicates += 1
    return records


def load_json_objects(path: str | os.PathLike, report: InputReport | None = None):
    """`etchat.io.read_json_without_conflicts`, its repeated keys counted as duplicates in ``report``."""
    data, repeats = read_json_without_conflicts(path)
    if report is not None:
        report.duplicates += repeats
    return data


# ---- the command -----------------------------------------------------------------------------------------------------


def add_scoring_args(parser: argparse.ArgumentParser, pred_help: str, positional: bool = True) -> None:
    """The flags every scorer has: the predictions, --out, --allow_errors, --once, --verbose."""
    if positional:
        parser.add_argument("pred_path", help=pred_help)
    parser.add_argument("--out", help="scores file (default: metrics.json next to the predictions)")
    parser.add_argument(
        "--allow_errors",
        action="store_true",
        help="exit 0 when samples were lost (absent, or failed in inference); they are scored as failures either way",
    )
    parser.add_argument(
        "--once",
        action="store_true",
        help="on a folder several processes may score (multi-node runs): leave the scoring to a process already "
        "scoring these inputs, and skip inputs whose scores are already written",
    )
    parser.add_argument("--verbose", action="store_true", help="show the traceback of an error")


@dataclass(frozen=True)
class Scorer:
    """A scoring command: ``prog`` names it in messages; ``parser()`` builds its arguments; ``out_path(args)`` is
    where the scores go; ``input_files(args)`` lists what it reads (their digest identifies a scoring for --once);
    ``score(args, report)`` returns the metric layout (None when there is nothing to score, e.g. a test split) and
    counts the input problems in ``report``."""

    prog: str
    parser: Callable[[], argparse.ArgumentParser]
    out_path: Callable[[argparse.Namespace], Path]
    input_files: Callable[[argparse.Namespace], list[Path]]
    score: Callable[[argparse.Namespace, InputReport], dict | None]
    indent: int = 4


def _inputs_digest(scorer: Scorer, args: argparse.Namespace, files: list[Path]) -> str:
    from etchat.eval.run_record import DigestCache, files_digest, json_digest

    options = {k: v for k, v in vars(args).items() if k not in ("once", "verbose", "allow_errors")}
    contents = files_digest([(str(path), path) for path in files], DigestCache(None))
    return json_digest([scorer.prog, project_version(), options, contents])


def _side_path(out: Path, suffix: str) -> Path:
    return out.with_name(f".{out.name}{suffix}")


def _already_scored(out: Path, digest: str) -> bool:
    sidecar = _side_path(out, SCORED_INPUTS_SUFFIX)
    try:
        return out.is_file() and json.loads(sidecar.read_text()).get("inputs") == digest
    except (OSError, ValueError):
        return False


def _bad_input(scorer: Scorer, error: BaseException) -> ScoringExit:
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        message = f"no space left on the device ({error.filename or error}): free some and score again"
    elif isinstance(error, KeyError):
        message = f"a record lacks the field {error}"
    else:
        message = " ".join(str(error).split()) or type(error).__name__
    return ScoringExit(EXIT_BAD_INPUT, f"{scorer.prog}: error: {message}")


BAD_INPUT_ERRORS = (OSError, ValueError, KeyError, RuntimeError)


def run_scorer(scorer: Scorer, argv: list[str] | None = None) -> dict | None:
    """The command line: parse ``argv``, then `score_to_file`."""
    args = scorer.parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    return score_to_file(scorer, args)


def score_to_file(scorer: Scorer, args: argparse.Namespace) -> dict | None:
    """Score, write the scores; returns them (with ``input_report``), or None when nothing was scored. Ends with
    `ScoringExit` (status 1 or 2, one line on stderr) as the module docstring says."""
    lock = None
    try:
        out = scorer.out_path(args)
        digest = _inputs_digest(scorer, args, scorer.input_files(args)) if args.once else None
        lock = FileLock(_side_path(out, LOCK_SUFFIX), f"scoring into {out}", extra={"inputs": digest})
        try:
            lock.acquire()
        except LockHeldError as held:
            if args.once and digest is not None and held.holder.get("inputs") == digest:
                logger.info("%s is scoring these predictions: leaving it to that process", describe(held.holder))
                return None
            raise
        if args.once and _already_scored(out, digest):
            logger.info("%s already holds the scores of these predictions", out)
            return json.loads(out.read_text())
        # A failed run must not leave an older run's scores looking like its result.
        out.unlink(missing_ok=True)
        _side_path(out, SCORED_INPUTS_SUFFIX).unlink(missing_ok=True)
        remove_stale_temp_files(out.parent)
        report = InputReport()
        metrics = scorer.score(args, report)
        if metrics is None:
            return None
        result = {**metrics, REPORT_KEY: report.counts()}
        write_json_atomic(out, result, indent=scorer.indent)
        if digest is not None:
            write_json_atomic(_side_path(out, SCORED_INPUTS_SUFFIX), {"inputs": digest})
        logger.info("Wrote %s", out)
    except BAD_INPUT_ERRORS as error:
        if args.verbose:
            logger.exception("Input error")
        stop = _bad_input(scorer, error)
        print(stop.line, file=sys.stderr)
        raise stop from error
    finally:
        if lock is not None:
            lock.release()
    line = report.lost_line()
    if line and not args.allow_errors:
        stop = ScoringExit(EXIT_LOST, f"{scorer.prog}: {line}")
        print(stop.line, file=sys.stderr)
        raise stop
    if line:
        logger.warning("%s (--allow_errors: exit status 0)", line.split(";")[0])
    return result


def folder_of(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path if path.is_dir() else path.parent
