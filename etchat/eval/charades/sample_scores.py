"""Charades-STA's per-sample statistics (`etchat.eval.sample_scores`, docs/design.md §18): one stratum, each query
clustered by its video; R1@t and mIoU as means over all queries; the parse audit of the predicted times."""

from __future__ import annotations

from etchat.eval.charades.metrics import THRESHOLDS, predicted_moment, sample_ious, sample_key
from etchat.eval.sample_scores import AuditGroup, SampleScores, Stratum

BENCHMARK = "charades_sta"
STRATUM = "charades_sta"
RULES = (
    "E.T. Chat's eval_grounding.py: exactly two <vid> times are the moment, used in the order given; anything else "
    "is a failure with IoU 0 that stays in every mean"
)


def time_failure(pred) -> str | None:
    """Why a record's ``pred`` gives no moment, or None."""
    if predicted_moment(pred) is not None:
        return None
    if not pred:
        return "no time"
    if isinstance(pred, (list, tuple)) and len(pred) == 1:
        return "one time"
    if isinstance(pred, (list, tuple)) and len(pred) > 2:
        return "three or more times"
    return "malformed times"


def charades_sample_scores(samples: list[dict]) -> SampleScores:
    """The statistics of scored Charades-STA records (as `metrics.load_predictions` gives them)."""
    ious = [0.0 if iou is None else iou for iou in sample_ious(samples)]
    columns = {"iou": ious, **{f"hit@{thr}": [float(iou >= thr) for iou in ious] for thr in THRESHOLDS}}
    units = [sample_key(sample) for sample in samples]
    clusters = [str(sample.get("vid", unit)) for sample, unit in zip(samples, units)]
    metrics = {f"R1@{thr}": ["unit_mean", STRATUM, f"hit@{thr}"] for thr in THRESHOLDS}
    metrics["mIoU"] = ["unit_mean", STRATUM, "iou"]
    audit = AuditGroup()
    for sample, unit in zip(samples, units):
        audit.add(unit, time_failure(sample.get("pred")), sample.get("response"))
    strata = {STRATUM: Stratum(units, clusters, columns)}
    return SampleScores(BENCHMARK, strata, metrics, {"moment": audit}, {"rules": RULES})
