"""Charades-STA moment retrieval scores: ``python -m etchat.eval.charades <pred.json or folder>``.

Input: a JSON file (or a folder whose ``*.json`` files are merged; a ``metrics.json`` there is skipped) holding a
list of predictions, one per test query, as the Charades-STA inference writes them::

    {"vid": "3MSZA", "query": "Localize the video moment according to the query '...'.",
     "response": "The event happens in <vid> - <vid>.", "span": [24.3, 30.4], "pred": [23.0, 31.0]}

* ``span``: the ground-truth ``[start, end]`` in seconds (required).
* ``pred``: the times, in seconds, of the ``<vid>`` tokens of the answer, in answer order. A list of exactly two
  numbers is the predicted moment (``[[t1, t2]]`` is accepted too). Anything else (missing, ``null``, one time, three
  or more times) is a failure: IoU 0, still counted in every denominator. Other fields are ignored.

The two times are used in the order given, as the original E.T. Chat script does: a reversed pair has no overlap and
scores IoU 0 (it is not a failure). IoU is computed in float32 like the original; a non-finite IoU counts as 0.

Scores: R1@0.3 / R1@0.5 / R1@0.7 (share of all samples whose IoU reaches the threshold), mIoU (mean IoU over all
samples) and the failure rate. They are printed and written to ``metrics.json`` next to the predictions (or to
``--out``) with ``input_report``, with ``sample_scores.json.gz`` and ``protocol.md`` for the results report
(docs/design.md §18); the command follows the contract every scorer shares (`etchat.eval.scoring`).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from pathlib import Path

import torch
from nncore.ops import temporal_iou

from etchat.eval.protocol import record_scoring
from etchat.eval.sample_scores import AuditGroup, SampleScores, Stratum
from etchat.eval.scoring import REPORT_KEY, InputReport, Scorer, add_scoring_args, folder_of, run_scorer, unique_records
from etchat.io import METRICS_FILE, read_records, record_files

logger = logging.getLogger(__name__)

THRESHOLDS = (0.3, 0.5, 0.7)


def _describe(sample: dict, position: int) -> str:
    return f"sample #{position} (vid={sample.get('vid')!r})"


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def predicted_moment(pred) -> list[float] | None:
    """The predicted [t1, t2], or None when the prediction does not hold exactly two times."""
    if isinstance(pred, (list, tuple)) and len(pred) == 1 and isinstance(pred[0], (list, tuple)):
        pred = pred[0]
    if not isinstance(pred, (list, tuple)) or len(pred) != 2 or not all(_number(t) for t in pred):
        return None
    return [float(t) for t in pred]


def moment_iou(span: list[float], moment: list[float]) -> float:
    """IoU of the ground-truth span and a predicted moment (float32, times in the given order; NaN -> 0)."""
    iou = temporal_iou(torch.Tensor([span]), torch.Tensor([moment])).item()
    return iou if math.isfinite(iou) else 0.0


def sample_ious(samples: list[dict]) -> list[float | None]:
    """IoU of every sample; None for a failure (no valid two-time prediction)."""
    ious = []
    for position, sample in enumerate(samples):
        span = sample.get("span")
        if not isinstance(span, (list, tuple)) or len(span) != 2 or not all(_number(t) for t in span):
            raise ValueError(f"{_describe(sample, position)}: 'span' must be [start, end] in seconds, got {span!r}")
        moment = predicted_moment(sample.get("pred"))
        ious.append(None if moment is None else moment_iou(list(span), moment))
    return ious


def grounding_scores(samples: list[dict]) -> dict[str, float]:
    """R1@0.3/0.5/0.7, mIoU (0-1) and the failure count and rate over all samples."""
    if not samples:
        raise ValueError("no prediction to score")
    ious = sample_ious(samples)
    total = len(samples)
    scored = [iou for iou in ious if iou is not None]
    scores = {f"R1@{thr}": sum(iou >= thr for iou in scored) / total for thr in THRESHOLDS}
    scores["mIoU"] = sum(scored) / total
    scores["Total"] = total
    scores["Failed"] = total - len(scored)
    scores["FailureRate"] = scores["Failed"] / total
    return scores


# --------------------------------------------------------------------------------------------------------------------
# Per-sample statistics (etchat.eval.sample_scores, docs/design.md §18): one stratum, each query clustered by its
# video; R1@t and mIoU as means over all queries; the parse audit of the predicted times.
# --------------------------------------------------------------------------------------------------------------------

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
    """The statistics of scored Charades-STA records (as `load_predictions` gives them)."""
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


def load_predictions(path: str | Path, report: InputReport | None = None) -> list[dict]:
    """Predictions of a JSON file, or of every JSON file of a folder (in name order; ``metrics.json`` and
    ``run.json`` skipped), each test query once."""
    files = record_files(path, suffixes=(".json",))
    return unique_records([(file, read_records(file)) for file in files], sample_key, report)


def sample_key(record: dict) -> str:
    """A test query's name: its line index, else its video, sentence and span (files made elsewhere lack idx)."""
    if "idx" in record:
        return str(record["idx"])
    return json.dumps([record.get("vid"), record.get("sentence", record.get("query")), record.get("span")])


def metrics_path(pred_path: str | Path) -> Path:
    """Where the scores of ``pred_path`` go: ``metrics.json`` in the prediction folder."""
    return folder_of(pred_path) / METRICS_FILE


def scores_path(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else metrics_path(args.pred_path)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.eval.charades",
        description="Charades-STA scores (R1@0.3/0.5/0.7, mIoU, failure rate). Exit status: 0 scored, 1 samples were "
        "lost (failed in inference; scored as failures), 2 bad input.",
    )
    add_scoring_args(parser, "a JSON prediction file, or a folder of them (see the module docstring)")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def score(args: argparse.Namespace, report: InputReport) -> dict[str, float]:
    samples = load_predictions(args.pred_path, report)
    report.samples = len(samples)
    report.count_failed(samples, sample_key)
    scores = grounding_scores(samples)
    report.unparsable = max(scores["Failed"] - report.failed_inference, 0)
    logger.info(f"Total number of samples: {scores['Total']}")
    logger.info(" ".join(f"R1@{thr}: {round(scores[f'R1@{thr}'], 3)}" for thr in THRESHOLDS))
    logger.info(f"mIoU: {round(scores['mIoU'], 3)}")
    logger.info(f"Failed: {scores['Failed']} samples ({scores['FailureRate'] * 100:.1f}%)")
    record_scoring(
        scores_path(args).parent, args.pred_path, charades_sample_scores(samples), {REPORT_KEY: report.counts()}
    )
    return scores


SCORER = Scorer(
    prog="etchat.eval.charades",
    parser=build_parser,
    out_path=scores_path,
    input_files=lambda args: record_files(args.pred_path, suffixes=(".json",)),
    score=score,
    indent=2,
)


def main(argv: list[str] | None = None) -> dict[str, float]:
    """The command line (docs/design.md §13): bad input is one line on stderr and exit status 2; lost samples exit 1
    unless --allow_errors."""
    return run_scorer(SCORER, argv)


if __name__ == "__main__":
    main()
