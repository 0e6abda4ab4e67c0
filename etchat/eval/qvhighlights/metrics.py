"""QVHighlights moment retrieval (MR) and highlight detection (HL) scores, written from the metric definitions of the
official Moment-DETR ``standalone_eval`` (docs/design.md §16).

Everything here works on checked input (`Query`, `Answer`, built by `etchat.eval.qvhighlights.formats`). An answer
that is ``None``, or whose windows / saliency list is empty, is a failure: it scores 0 in every mean it belongs to.
The official code crashes on those inputs instead, so no official number is changed by this choice.

Means are taken with numpy in the same layout as the official code (a queries x thresholds array averaged over its
first axis; the Q x 3 highlight APs as one array), so that the last bits, and hence the 2-decimal rounding, agree.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

MR_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))  # 0.5, 0.55, ..., 0.95
MAX_WINDOWS = 10  # windows of an answer taken in list order, before ranking by score
# Buckets of ground-truth window length l: lo < l <= hi. `full` keeps every window, whatever its length.
LENGTH_BUCKETS = {"full": None, "short": (0, 10), "middle": (10, 30), "long": (30, 150)}
SALIENCY_LEVELS = {"Fair": 2, "Good": 3, "VeryGood": 4}  # a clip is positive for an annotator at score >= level
CLIP_SECONDS = 2
NUM_ANNOTATORS = 3


@dataclass(frozen=True)
class Query:
    """Ground truth of one query: its windows [start, end] and each 2-second clip's 3 annotator scores (0-4)."""

    qid: Hashable
    duration: float
    windows: tuple[tuple[float, float], ...]
    clip_scores: np.ndarray  # (num_clips(duration), 3) ints; clips not annotated score 0

    @property
    def num_clips(self) -> int:
        return num_clips(self.duration)


@dataclass(frozen=True)
class Answer:
    """One query's prediction: windows [start, end, score] in the submitted order, and one score per clip.
    ``None`` means the submission does not hold that part for the query."""

    qid: Hashable
    windows: tuple[tuple[float, float, float], ...] | None = None
    saliency: tuple[float, ...] | None = None


def num_clips(duration: float) -> int:
    return int(duration / CLIP_SECONDS)


def percent(value: float | None) -> float | None:
    """The official rounding: 100 x value, correctly rounded to 2 decimals (53.125 -> 53.12)."""
    return None if value is None else float(f"{100 * value:.2f}")


# --------------------------------------------------------------------------------------------------------------------
# Moment retrieval
# --------------------------------------------------------------------------------------------------------------------


def window_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two windows; 0 when the union is not positive (reversed or empty windows)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    union = (a[1] - a[0]) + (b[1] - b[0]) - inter
    return inter / union if union > 0 else 0.0


def hull_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over the span covering both windows: the IoU when they overlap, else 0 (R@1's formula)."""
    inter = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    hull = max(a[1], b[1]) - min(a[0], b[0])
    return inter / hull if hull > 0 else 0.0


def ranked_windows(windows: Sequence[Sequence[float]]) -> list[Sequence[float]]:
    """The first `MAX_WINDOWS` windows in list order, then sorted by decreasing score; equal scores keep their order."""
    return sorted(windows[:MAX_WINDOWS], key=lambda w: -w[2])


def greedy_hits(ranked: Sequence[Sequence[float]], truth: Sequence[Sequence[float]], threshold: float) -> list[bool]:
    """Whether each ranked window is a true positive at ``threshold``.

    Each window claims its best-overlapping ground-truth window not claimed yet, if that overlap reaches the threshold
    (IoU >= threshold); a claimed window is skipped for the next best. Among equal IoUs the later ground-truth window
    is tried first (the order of a reversed stable sort).
    """
    claimed = [False] * len(truth)
    hits = []
    for window in ranked:
        ious = [window_iou(window, gt) for gt in truth]
        hit = False
        for j in sorted(range(len(truth)), key=lambda j: (-ious[j], -j)):
            if ious[j] < threshold:
                break
            if not claimed[j]:
                claimed[j] = hit = True
                break
        hits.append(hit)
    return hits


def interpolated_ap(hits: Sequence[bool], num_truth: int) -> float:
    """All-point interpolated AP: precision made non-increasing in recall, summed over the steps of recall."""
    tp = np.cumsum(np.asarray(hits, dtype=np.float64))
    ranks = np.arange(1, len(hits) + 1, dtype=np.float64)
    precision = np.concatenate([[0.0], tp / ranks, [0.0]])
    recall = np.concatenate([[0.0], tp / num_truth, [1.0]])
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.flatnonzero(recall[1:] != recall[:-1]) + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def query_aps(windows: Sequence[Sequence[float]] | None, truth: Sequence[Sequence[float]]) -> list[float]:
    """AP of one query at every threshold (0 for a failed answer)."""
    if not windows:
        return [0.0] * len(MR_THRESHOLDS)
    ranked = ranked_windows(windows)
    return [interpolated_ap(greedy_hits(ranked, truth, thr), len(truth)) for thr in MR_THRESHOLDS]


def top1_iou(windows: Sequence[Sequence[float]] | None, truth: Sequence[Sequence[float]]) -> float:
    """R@1 overlap: the first listed window against the ground-truth window it overlaps most (the first on ties)."""
    if not windows:
        return 0.0
    first = windows[0]
    ious = [window_iou(first, gt) for gt in truth]
    best = truth[ious.index(max(ious))]
    return hull_iou(first, best)


def in_bucket(window: Sequence[float], bounds: tuple[float, float] | None) -> bool:
    return bounds is None or bounds[0] < window[1] - window[0] <= bounds[1]


def bucket_truth(queries: Sequence[Query], bounds: tuple[float, float] | None) -> list[tuple[Query, list]]:
    """(query, its ground-truth windows in the bucket) for the queries that keep at least one."""
    kept = [(query, [w for w in query.windows if in_bucket(w, bounds)]) for query in queries]
    return [(query, windows) for query, windows in kept if windows]


def moment_retrieval(queries: Sequence[Query], answers: dict) -> dict[str, dict | None]:
    """Per length bucket: MR-mAP per threshold and their average, and R@1 per threshold (values in 0-1).

    A bucket without any ground-truth window gets None for every value (the official code crashes there).
    """
    results = {}
    for bucket, bounds in LENGTH_BUCKETS.items():
        pairs = bucket_truth(queries, bounds)
        if not pairs:
            results[bucket] = None
            continue
        windows = [_windows(answers.get(query.qid)) for query, _ in pairs]
        aps = np.array([query_aps(w, truth) for w, (_, truth) in zip(windows, pairs)]).mean(0)
        ious = np.array([top1_iou(w, truth) for w, (_, truth) in zip(windows, pairs)])
        results[bucket] = {
            "MR-mAP": {**dict(zip(map(str, MR_THRESHOLDS), aps.tolist())), "average": float(np.mean(aps))},
            "MR-R1": {str(thr): float(np.mean(ious >= thr)) for thr in MR_THRESHOLDS},
        }
    return results


def _windows(answer: Answer | None):
    return None if answer is None else answer.windows


# --------------------------------------------------------------------------------------------------------------------
# Highlight detection
# --------------------------------------------------------------------------------------------------------------------


def clip_ap(scores: np.ndarray, labels: np.ndarray) -> float:
    """AP of one annotator's binary clip labels under the predicted clip scores.

    No positive clip: 0; all clips positive: 1. Otherwise clips with equal scores enter together: at each distinct
    score s (high to low) precision and recall of the clips scoring >= s, precision made non-increasing in recall,
    and AP is the plain mean of that precision over the levels where recall grows.
    """
    positives = int(labels.sum())
    if positives == 0:
        return 0.0
    if positives == len(labels):
        return 1.0
    levels = np.unique(scores)  # ascending: from the highest recall to the lowest
    tp = np.array([labels[scores >= s].sum() for s in levels], dtype=np.float64)
    selected = np.array([(scores >= s).sum() for s in levels], dtype=np.float64)
    precision = np.maximum.accumulate(tp / selected)
    recall = tp / positives
    grows = recall != np.concatenate([recall[1:], [0.0]])
    return float(np.mean(precision[grows]))


def fitted_scores(saliency: Sequence[float], clips: int) -> np.ndarray:
    """The predicted scores of the video's clips: truncated, or padded with 0."""
    scores = np.zeros(clips, dtype=np.float64)
    kept = np.asarray(saliency[:clips], dtype=np.float64)
    scores[: len(kept)] = kept
    return scores


def highlight_detection(queries: Sequence[Query], answers: dict) -> dict[str, dict]:
    """Per saliency level (Fair, Good, VeryGood): HL-mAP over all query x annotator APs, and HL-Hit1 (0-1).

    Hit@1: the top-scored clip of the whole submitted list (the first on ties) is a hit when any annotator marks it
    positive; a clip past the end of the video is a miss. A failed answer scores 0 in both.
    """
    results = {}
    for name, level in SALIENCY_LEVELS.items():
        per_query = [query_highlight(query, answers.get(query.qid), level) for query in queries]
        aps, hits = [annotator_aps for annotator_aps, _ in per_query], [hit for _, hit in per_query]
        results[f"HL-min-{name}"] = {"HL-mAP": float(np.mean(np.array(aps))), "HL-Hit1": float(np.mean(hits))}
    return results


def query_highlight(query: Query, answer: Answer | None, level: int) -> tuple[list[float], float]:
    """One query's AP per annotator and its Hit@1 at a saliency level (all 0 for a failed answer)."""
    saliency = None if answer is None else answer.saliency
    if not saliency:
        return [0.0] * NUM_ANNOTATORS, 0.0
    labels = query.clip_scores >= level
    scores = fitted_scores(saliency, query.num_clips)
    top = int(np.argmax(saliency))
    hit = float(top < query.num_clips and bool(labels[top].any()))
    return [clip_ap(scores, labels[:, k]) for k in range(NUM_ANNOTATORS)], hit


# --------------------------------------------------------------------------------------------------------------------
# The official report layout
# --------------------------------------------------------------------------------------------------------------------


def official_report(moments: dict | None, highlights: dict | None) -> dict:
    """The official layout, values x100 rounded to 2 decimals: ``brief`` first, then the other tables by name."""
    brief, tables = {}, {}
    if moments is not None:
        full = moments["full"]
        brief_mr = {
            "MR-full-mAP": full["MR-mAP"]["average"],
            "MR-full-mAP@0.5": full["MR-mAP"]["0.5"],
            "MR-full-mAP@0.75": full["MR-mAP"]["0.75"],
            "MR-full-R1@0.5": full["MR-R1"]["0.5"],
            "MR-full-R1@0.7": full["MR-R1"]["0.7"],
        }
        for bucket in ("short", "middle", "long"):
            brief_mr[f"MR-{bucket}-mAP"] = None if moments[bucket] is None else moments[bucket]["MR-mAP"]["average"]
        brief.update({key: percent(brief_mr[key]) for key in sorted(brief_mr)})
        for bucket, table in moments.items():
            tables[bucket] = _percent_table(table)
    if highlights is not None:
        for name, table in highlights.items():
            brief[f"{name}-mAP"] = percent(table["HL-mAP"])
            brief[f"{name}-Hit1"] = percent(table["HL-Hit1"])
            tables[name] = _percent_table(table)
    return {"brief": brief, **{name: tables[name] for name in sorted(tables)}}


def _percent_table(table: dict | None) -> dict:
    if table is None:  # an empty length bucket
        return {
            "MR-mAP": {**{str(thr): None for thr in MR_THRESHOLDS}, "average": None},
            "MR-R1": {str(thr): None for thr in MR_THRESHOLDS},
        }
    return {key: _percent_table(value) if isinstance(value, dict) else percent(value) for key, value in table.items()}
