"""QVHighlights scores in the official Moment-DETR layout (docs/design.md §16).

    python -m etchat.eval.qvhighlights --pred submission.jsonl --gt highlight_val_release.jsonl --out metrics.json
    python -m etchat.eval.qvhighlights work_dirs/etchat-stage-3/qvhighlights     # E.T. Chat's inference output

The prediction is either a standard submission (``.jsonl``, needs ``--gt``) or the output of
``etchat.eval.qvhighlights.infer`` (its ``qvhighlights*.json`` files, or their folder): that output is first turned
into ``qvhighlights_submission.jsonl`` next to it, and its records carry the ground truth unless ``--gt`` is given
(the test split has none: the submission is written and nothing is scored).

The scores file (default ``metrics.json`` next to the predictions) holds the official layout with the official
numbers: ``brief`` (MR-full-R1@0.5/0.7, MR-full-mAP, mAP@0.5/0.75, short/middle/long mAP, HL-min-{Fair,Good,VeryGood}
-{mAP,Hit1}), the HL-min-* tables and the full / long / middle / short tables of mAP and R1 per IoU threshold, then
one more key, ``input_report``, counting what was wrong with the submission. Where the official code crashes this
scorer counts and goes on: a query without a prediction, without windows or without saliency scores scores 0 (and
stays in every mean); a duplicated qid uses its last line; a reversed window overlaps nothing; a length bucket
without ground truth reports null. Samples lost (no prediction, or an inference error) make the exit status 1.
Next to the scores file: ``sample_scores.json.gz`` and ``protocol.md`` for the results report (docs/design.md §18).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from etchat.eval.protocol import record_scoring
from etchat.eval.qvhighlights.formats import (
    STEM,
    SubmissionReport,
    parse_ground_truth,
    parse_submission,
    submission_from_records,
)
from etchat.eval.qvhighlights.metrics import highlight_detection, moment_retrieval, official_report
from etchat.eval.qvhighlights.sample_scores import qvhighlights_sample_scores
from etchat.eval.results import final_files
from etchat.io import METRICS_FILE, read_records, write_json_atomic, write_jsonl_atomic

logger = logging.getLogger(__name__)

SUBMISSION_FILE = "qvhighlights_submission.jsonl"
REPORT_KEY = "input_report"


def evaluate(submission: list[dict], truth: list[dict], source: str = "submission") -> tuple[dict, SubmissionReport]:
    """The official result of a submission against the ground truth, and the count of its problems."""
    queries = parse_ground_truth(truth, "ground truth")
    answers, report = parse_submission(submission, queries, source)
    moments = moment_retrieval(queries, answers) if report.moment_retrieval else None
    highlights = highlight_detection(queries, answers) if report.highlight_detection else None
    return official_report(moments, highlights), report


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def read_inputs(pred_path: Path, gt_path: str | None) -> tuple[list[dict], list[dict] | None, int]:
    """(submission lines, ground-truth lines or None, inference errors) of a submission or of inference output."""
    truth = read_records(gt_path) if gt_path else None
    if pred_path.suffix == ".jsonl":
        if truth is None:
            raise ValueError(f"{pred_path}: a submission .jsonl needs the ground truth (--gt)")
        return read_records(pred_path), truth, 0
    records = [record for file in final_files(pred_path, STEM) for record in read_records(file)]
    submission, record_truth = submission_from_records(records)
    out = _folder(pred_path) / SUBMISSION_FILE
    write_jsonl_atomic(out, submission)
    logger.info("Wrote the submission of %d queries to %s", len(submission), out)
    return submission, truth if truth is not None else record_truth, sum("error" in r for r in records)


def log_result(result: dict, report: SubmissionReport) -> None:
    for key, value in result["brief"].items():
        logger.info("%-22s %s", key, "-" if value is None else f"{value:.2f}")
    problems = report.problems()
    if problems:
        logger.warning("Input problems: %s", ", ".join(f"{key} {value}" for key, value in problems.items()))
    if report.lost():
        shown = ", ".join(map(repr, report.missing_qids[:5]))
        logger.error(
            "%d of %d queries had no prediction%s and %d inference records failed: these scores are a lower bound",
            report.missing_predictions,
            report.queries,
            f" (e.g. qid {shown})" if shown else "",
            report.inference_errors,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.eval.qvhighlights",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pred_path", nargs="?", help="inference output (.json file or folder) or a submission .jsonl")
    parser.add_argument("--pred", dest="pred_option", metavar="PRED", help="the same as the positional pred_path")
    parser.add_argument("--gt", help="ground truth .jsonl (default: the one inference records carry)")
    parser.add_argument("--out", help=f"scores file (default: {METRICS_FILE} next to the predictions)")
    args = parser.parse_args(argv)
    if (args.pred_path is None) == (args.pred_option is None):
        parser.error("give the predictions once: as pred_path or as --pred")
    args.pred_path = Path(args.pred_path or args.pred_option)
    return args


def main(argv: list[str] | None = None) -> dict | None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    submission, truth, errors = read_inputs(args.pred_path, args.gt)
    if truth is None:
        logger.warning("%s holds no ground truth (a test split?): nothing to score", args.pred_path)
        return None
    result, report = evaluate(submission, truth, str(args.pred_path))
    report.inference_errors = errors
    result[REPORT_KEY] = report.counts()
    out = Path(args.out) if args.out else _folder(args.pred_path) / METRICS_FILE
    record_scoring(out.parent, args.pred_path, qvhighlights_sample_scores(submission, truth, args.pred_path), result)
    write_json_atomic(out, result, indent=4)
    log_result(result, report)
    logger.info("Wrote %s", out)
    if report.lost():
        sys.exit(1)
    return result
