"""QVHighlights' per-query statistics (`etchat.eval.sample_scores`, docs/design.md §18): one stratum, each query
clustered by its video; MR mAP (full and per length bucket), R1 and HL mAP / Hit1 as means over queries; the parse
audit of the moment-retrieval and highlight answers."""

from __future__ import annotations

from pathlib import Path

from etchat.eval.qvhighlights.formats import STEM, parse_ground_truth, parse_submission
from etchat.eval.qvhighlights.metrics import (
    LENGTH_BUCKETS,
    MR_THRESHOLDS,
    SALIENCY_LEVELS,
    bucket_truth,
    query_aps,
    query_highlight,
    top1_iou,
)
from etchat.eval.results import final_files
from etchat.eval.sample_scores import AuditGroup, SampleScores, Stratum
from etchat.io import read_records

BENCHMARK = "qvhighlights"
STRATUM = "qvhighlights"
RULES = (
    "Moment-DETR standalone_eval definitions (docs/design.md §16): top 10 windows ranked by score, greedy matching, "
    "all-point interpolated AP; HL AP with tied clips entering together; a missing or empty answer scores 0 and stays "
    "in every mean"
)
R1_THRESHOLDS = ("0.5", "0.7")


def _moment_columns(queries, answers) -> dict[str, list[float]]:
    columns = {}
    for bucket, bounds in LENGTH_BUCKETS.items():
        kept = {query.qid: truth for query, truth in bucket_truth(queries, bounds)}
        aps = [query_aps(_windows(answers, q.qid), kept[q.qid]) if q.qid in kept else None for q in queries]
        columns[f"in_{bucket}"] = [float(ap is not None) for ap in aps]
        columns[f"ap_{bucket}"] = [0.0 if ap is None else sum(ap) / len(ap) for ap in aps]
        if bucket == "full":
            for thr in ("0.5", "0.75"):
                columns[f"ap@{thr}_full"] = [ap[MR_THRESHOLDS.index(float(thr))] for ap in aps]
            ious = [top1_iou(_windows(answers, q.qid), q.windows) for q in queries]
            for thr in R1_THRESHOLDS:
                columns[f"r1@{thr}"] = [float(iou >= float(thr)) for iou in ious]
    return columns


def _windows(answers, qid):
    answer = answers.get(qid)
    return None if answer is None else answer.windows


def _moment_formulas() -> dict:
    formulas = {
        "MR-full-mAP": ["unit_mean", STRATUM, "ap_full"],
        "MR-full-mAP@0.5": ["unit_mean", STRATUM, "ap@0.5_full"],
        "MR-full-mAP@0.75": ["unit_mean", STRATUM, "ap@0.75_full"],
    }
    formulas.update({f"MR-full-R1@{thr}": ["unit_mean", STRATUM, f"r1@{thr}"] for thr in R1_THRESHOLDS})
    for bucket in ("short", "middle", "long"):  # the queries that keep a ground-truth window of the bucket
        formulas[f"MR-{bucket}-mAP"] = ["sum_ratio", STRATUM, f"ap_{bucket}", f"in_{bucket}"]
    return formulas


def _responses(pred_path) -> dict:
    """(qid, task) -> answer text, from inference records (a submission file has none)."""
    path = Path(pred_path)
    if path.suffix == ".jsonl":
        return {}
    records = [record for file in final_files(path, STEM) for record in read_records(file)]
    return {(record.get("qid"), record.get("task")): record.get("response") for record in records}


def qvhighlights_sample_scores(submission: list[dict], truth: list[dict], pred_path) -> SampleScores:
    """The statistics of a submission scored against the ground truth (``pred_path``: where the answers' texts are,
    for the audit)."""
    queries = parse_ground_truth(truth, "ground truth")
    answers, report = parse_submission(submission, queries, str(pred_path))
    videos = {entry.get("qid"): entry.get("vid") for entry in truth}
    units = [str(query.qid) for query in queries]
    clusters = [str(videos.get(query.qid) or query.qid) for query in queries]
    columns, metrics, audit = {}, {}, {}
    responses = _responses(pred_path)
    if report.moment_retrieval:
        columns.update(_moment_columns(queries, answers))
        metrics.update(_moment_formulas())
        audit["MR"] = AuditGroup()
    if report.highlight_detection:
        for name, level in SALIENCY_LEVELS.items():
            per_query = [query_highlight(query, answers.get(query.qid), level) for query in queries]
            columns[f"hl_ap_{name}"] = [sum(aps) / len(aps) for aps, _ in per_query]
            columns[f"hl_hit1_{name}"] = [hit for _, hit in per_query]
            metrics[f"HL-min-{name}-mAP"] = ["unit_mean", STRATUM, f"hl_ap_{name}"]
            metrics[f"HL-min-{name}-Hit1"] = ["unit_mean", STRATUM, f"hl_hit1_{name}"]
        audit["HL"] = AuditGroup()
    for query, unit in zip(queries, units):
        answer = answers.get(query.qid)
        if "MR" in audit:
            kind = "no prediction" if answer is None else None if answer.windows else "no window"
            audit["MR"].add(unit, kind, responses.get((query.qid, "mr")))
        if "HL" in audit:
            kind = "no prediction" if answer is None else None if answer.saliency else "no saliency scores"
            audit["HL"].add(unit, kind, responses.get((query.qid, "hd")))
    strata = {STRATUM: Stratum(units, clusters, columns)}
    return SampleScores(BENCHMARK, strata, metrics, audit, {"rules": RULES})
