"""QVHighlights files (docs/design.md §16): the Moment-DETR ground truth and submission ``.jsonl`` formats, checked
and turned into `Query` / `Answer` objects, with every problem of a submission counted; and the submission made from
E.T. Chat's inference records.

Ground truth (one JSON object per line): ``qid``, ``query``, ``vid``, ``duration`` (seconds), ``relevant_windows``
(``[[start, end], ...]``), ``relevant_clip_ids`` (2-second clips) and ``saliency_scores`` (one ``[a1, a2, a3]`` per
listed clip, 0-4). Submission: ``qid``, ``query``, ``vid``, ``pred_relevant_windows`` (``[[start, end, score],
...]``) and ``pred_saliency_scores`` (one score per 2-second clip).

A broken ground truth is an error naming the entry. A submission's problems are counted, never raised: a query
without a prediction, a duplicated or unknown qid, malformed or reversed windows, windows outside the video, and
saliency lists that are missing or of the wrong length (`SubmissionReport`).
"""

from __future__ import annotations

import os
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field

import numpy as np

from etchat.eval.qvhighlights.metrics import MAX_WINDOWS, NUM_ANNOTATORS, Answer, Query, num_clips
from etchat.io import is_finite_number, read_records

STEM = "qvhighlights"  # inference writes <stem>.json / <stem>_<i>.json
WINDOWS_KEY = "pred_relevant_windows"
SALIENCY_KEY = "pred_saliency_scores"
TRUTH_FIELDS = ("qid", "query", "vid", "duration", "relevant_windows", "relevant_clip_ids", "saliency_scores")


def _qid(entry: dict, where: str) -> Hashable:
    qid = entry.get("qid")
    if isinstance(qid, bool) or not isinstance(qid, (int, str)):
        raise ValueError(f"{where}: 'qid' must be an integer or a string, got {qid!r}")
    return qid


# --------------------------------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------------------------------


def parse_query(entry: dict, where: str) -> Query:
    """One ground-truth line as a `Query`; a problem is a ValueError naming ``where`` and the qid."""
    qid = _qid(entry, where)
    where = f"{where} (qid {qid!r})"
    duration = entry.get("duration")
    if not is_finite_number(duration) or duration <= 0:
        raise ValueError(f"{where}: 'duration' must be a positive number of seconds, got {duration!r}")
    windows = entry.get("relevant_windows")
    if not isinstance(windows, list) or not windows:
        raise ValueError(f"{where}: 'relevant_windows' must be a non-empty list of [start, end]")
    for window in windows:
        numbers = isinstance(window, list) and len(window) == 2 and all(map(is_finite_number, window))
        if not numbers or window[1] < window[0]:
            raise ValueError(f"{where}: bad relevant window {window!r} (expected [start, end] with start <= end)")
    clips, scores = entry.get("relevant_clip_ids"), entry.get("saliency_scores")
    if not isinstance(clips, list) or not isinstance(scores, list) or len(clips) != len(scores):
        raise ValueError(f"{where}: 'relevant_clip_ids' and 'saliency_scores' must be lists of the same length")
    clip_scores = np.zeros((num_clips(duration), NUM_ANNOTATORS), dtype=np.int64)
    for clip, score in zip(clips, scores):
        if isinstance(clip, bool) or not isinstance(clip, int) or not 0 <= clip < len(clip_scores):
            raise ValueError(f"{where}: clip id {clip!r} is outside the {len(clip_scores)} clips of the video")
        if not isinstance(score, list) or len(score) != NUM_ANNOTATORS or not all(map(is_finite_number, score)):
            raise ValueError(f"{where}: saliency score {score!r} of clip {clip} is not {NUM_ANNOTATORS} numbers")
        clip_scores[clip] = score
    return Query(qid, float(duration), tuple((float(s), float(e)) for s, e in windows), clip_scores)


def parse_ground_truth(entries: list[dict], source: str) -> list[Query]:
    queries, seen = [], set()
    for position, entry in enumerate(entries):
        query = parse_query(entry, f"{source}: entry #{position}")
        if query.qid in seen:
            raise ValueError(f"{source}: qid {query.qid!r} appears twice in the ground truth")
        seen.add(query.qid)
        queries.append(query)
    if not queries:
        raise ValueError(f"{source}: no ground-truth query")
    return queries


def load_ground_truth(path: str | os.PathLike) -> list[Query]:
    return parse_ground_truth(read_records(path), str(path))


# --------------------------------------------------------------------------------------------------------------------
# Submissions
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SubmissionReport:
    """What was wrong with a submission, in numbers (all 0 for a clean one)."""

    queries: int = 0  # ground-truth queries scored
    moment_retrieval: bool = False  # some line holds pred_relevant_windows
    highlight_detection: bool = False  # some line holds pred_saliency_scores
    inference_errors: int = 0  # inference records with an `error` (their lines hold empty lists)
    missing_predictions: int = 0  # queries without a submission line: scored 0 everywhere
    unknown_qids: int = 0  # submission lines whose qid is not in the ground truth: ignored
    duplicate_qids: int = 0  # extra lines of a qid: the last line is used
    no_windows: int = 0  # queries whose line has no usable window: MR scores 0
    malformed_windows: int = 0  # entries that are not [start, end, score] numbers: dropped
    reversed_windows: int = 0  # end < start: kept, overlap 0
    windows_outside_video: int = 0  # start < 0 or end > duration: kept as written
    windows_beyond_top10: int = 0  # windows after the 10th of a line: not scored
    no_saliency: int = 0  # queries whose line has no usable saliency list: HL scores 0
    saliency_length_mismatch: int = 0  # lists longer / shorter than the clips: truncated / padded with 0
    missing_qids: list = field(default_factory=list)

    def lost(self) -> bool:
        """Whether samples were lost (not answered at all): the score is then only a lower bound."""
        return self.missing_predictions > 0 or self.inference_errors > 0

    def counts(self) -> dict[str, int]:
        flags = ("missing_qids", "moment_retrieval", "highlight_detection")
        return {key: value for key, value in asdict(self).items() if key not in flags}

    def problems(self) -> dict[str, int]:
        return {key: value for key, value in self.counts().items() if value and key != "queries"}


def _windows(value, duration: float, report: SubmissionReport) -> tuple[tuple[float, float, float], ...]:
    if not isinstance(value, list):
        report.malformed_windows += 1
        return ()
    kept = []
    for window in value:
        if not isinstance(window, list) or len(window) < 3 or not all(map(is_finite_number, window[:3])):
            report.malformed_windows += 1
            continue
        start, end, score = (float(x) for x in window[:3])
        report.reversed_windows += end < start
        report.windows_outside_video += start < 0 or end > duration
        kept.append((start, end, score))
    report.windows_beyond_top10 += max(0, len(kept) - MAX_WINDOWS)
    return tuple(kept)


def _saliency(value, clips: int, report: SubmissionReport) -> tuple[float, ...]:
    if not isinstance(value, list) or not value or not all(map(is_finite_number, value)):
        return ()
    report.saliency_length_mismatch += len(value) != clips
    return tuple(float(x) for x in value)


def parse_submission(entries: list[dict], queries: list[Query], source: str) -> tuple[dict, SubmissionReport]:
    """qid -> `Answer` for the ground-truth queries, and the report of what was wrong.

    Moment retrieval is scored when some line has ``pred_relevant_windows``, highlight detection when some line has
    ``pred_saliency_scores``; a line lacking the key of a scored task fails that task.
    """
    report = SubmissionReport(queries=len(queries))
    by_qid: dict = {}
    for position, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ValueError(f"{source}: entry #{position} is not a JSON object")
        qid = _qid(entry, f"{source}: entry #{position}")
        report.duplicate_qids += qid in by_qid
        by_qid[qid] = entry
    truth = {query.qid: query for query in queries}
    report.unknown_qids = sum(qid not in truth for qid in by_qid)
    with_windows = report.moment_retrieval = any(WINDOWS_KEY in entry for entry in entries)
    with_saliency = report.highlight_detection = any(SALIENCY_KEY in entry for entry in entries)
    if not (with_windows or with_saliency):
        raise ValueError(f"{source}: no line holds '{WINDOWS_KEY}' or '{SALIENCY_KEY}'")
    answers = {}
    for query in queries:
        entry = by_qid.get(query.qid)
        if entry is None:
            report.missing_predictions += 1
            report.missing_qids.append(query.qid)
            continue
        windows = _windows(entry.get(WINDOWS_KEY), query.duration, report) if with_windows else None
        saliency = _saliency(entry.get(SALIENCY_KEY), query.num_clips, report) if with_saliency else None
        report.no_windows += with_windows and not windows
        report.no_saliency += with_saliency and not saliency
        answers[query.qid] = Answer(query.qid, windows, saliency)
    return answers, report


# --------------------------------------------------------------------------------------------------------------------
# E.T. Chat's inference records -> submission and ground truth
# --------------------------------------------------------------------------------------------------------------------


def submission_from_records(records: list[dict]) -> tuple[list[dict], list[dict] | None]:
    """The submission lines (one per qid, in first-seen order) and, when the records carry it, the ground truth.

    Each query has a moment-retrieval record (``task: mr``, holding ``pred_relevant_windows``) and a highlight
    record (``task: hd``, holding ``pred_saliency_scores``); a failed record holds an empty list.
    """
    lines: dict = {}
    truth: dict = {}
    for record in records:
        qid = record["qid"]
        line = lines.setdefault(qid, {"qid": qid, "query": record.get("query"), "vid": record.get("vid")})
        for key in (WINDOWS_KEY, SALIENCY_KEY):
            if key in record:
                line[key] = record[key]
        truth.setdefault(qid, {name: record[name] for name in TRUTH_FIELDS if name in record})
    has_truth = all("relevant_windows" in line for line in truth.values())
    return list(lines.values()), list(truth.values()) if has_truth else None
