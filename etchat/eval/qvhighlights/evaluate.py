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
stays in every mean); a reversed window overlaps nothing; a length bucket without ground truth reports null. The
command refuses a qid found twice with different lines (naming both) and counts identical copies once (`evaluate`,
given such a submission, uses the last line). It follows the contract every scorer shares (`etchat.eval.scoring`):
queries lost (no prediction, or an inference error) make the exit status 1 unless ``--allow_errors``; bad input is
one line and exit status 2. Next to the scores file: ``sample_scores.json.gz`` and ``protocol.md`` for the
results report (docs/design.md §18).
"""

from __future__ import annotations

import argparse
import logging
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
from etchat.eval.scoring import REPORT_KEY, InputReport, Scorer, add_scoring_args, folder_of, run_scorer, unique_records
from etchat.io import METRICS_FILE, read_records, write_jsonl_atomic

logger = logging.getLogger(__name__)

SUBMISSION_FILE = "qvhighlights_submission.jsonl"
__all__ = ["REPORT_KEY", "SUBMISSION_FILE", "evaluate", "main"]


def evaluate(submission: list[dict], truth: list[dict], source: str = "submission") -> tuple[dict, SubmissionReport]:
    """The official result of a submission against the ground truth, and the count of its problems."""
    queries = parse_ground_truth(truth, "ground truth")
    answers, report = parse_submission(submission, queries, source)
    moments = moment_retrieval(queries, answers) if report.moment_retrieval else None
    highlights = highlight_detection(queries, answers) if report.highlight_detection else None
    return official_report(moments, highlights), report


def _qid_key(line: dict) -> str:
    return repr(line.get("qid"))


def _record_key(record: dict) -> str:
    return f"{record.get('qid')}/{record.get('task')}"


def read_inputs(pred_path: Path, gt_path: str | None, report: InputReport) -> tuple[list[dict], list[dict] | None]:
    """(submission lines, ground-truth lines or None) of a submission or of inference output; a line or record found
    twice is kept once when the copies are identical and refused when they differ; failed records are counted."""
    truth = read_records(gt_path) if gt_path else None
    if pred_path.suffix == ".jsonl":
        if truth is None:
            raise ValueError(f"{pred_path}: a submission .jsonl needs the ground truth (--gt)")
        return unique_records([(pred_path, read_records(pred_path))], _qid_key, report), truth
    files = final_files(pred_path, STEM)
    records = unique_records([(file, read_records(file)) for file in files], _record_key, report)
    report.count_failed(records, _record_key)
    submission, record_truth = submission_from_records(records)
    out = folder_of(pred_path) / SUBMISSION_FILE
    write_jsonl_atomic(out, submission)
    logger.info("Wrote the submission of %d queries to %s", len(submission), out)
    return submission, truth if truth is not None else record_truth


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


class _Parser(argparse.ArgumentParser):
    """Accepts the predictions as the positional pred_path or as --pred (Moment-DETR's name), once."""

    def parse_args(self, args=None, namespace=None):
        parsed = super().parse_args(args, namespace)
        if (parsed.pred_path is None) == (parsed.pred_option is None):
            self.error("give the predictions once: as pred_path or as --pred")
        parsed.pred_path = Path(parsed.pred_path or parsed.pred_option)
        return parsed


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="python -m etchat.eval.qvhighlights",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("pred_path", nargs="?", help="inference output (.json file or folder) or a submission .jsonl")
    parser.add_argument("--pred", dest="pred_option", metavar="PRED", help="the same as the positional pred_path")
    parser.add_argument("--gt", help="ground truth .jsonl (default: the one inference records carry)")
    add_scoring_args(parser, "", positional=False)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def score(args: argparse.Namespace, report: InputReport) -> dict | None:
    submission, truth = read_inputs(args.pred_path, args.gt, report)
    if truth is None:
        logger.warning("%s holds no ground truth (a test split?): nothing to score", args.pred_path)
        return None
    result, submission_report = evaluate(submission, truth, str(args.pred_path))
    submission_report.inference_errors = report.failed_inference
    report.samples = submission_report.queries
    report.missing = submission_report.missing_predictions
    report.lost += report.missing
    report.lost_examples += [f"qid {qid!r}" for qid in submission_report.missing_qids[:3]]
    unanswered = submission_report.no_windows + submission_report.no_saliency
    report.unparsable = max(unanswered - report.failed_inference, 0)
    report.details = submission_report.counts()
    log_result(result, submission_report)
    record_scoring(
        scores_path(args).parent,
        args.pred_path,
        qvhighlights_sample_scores(submission, truth, args.pred_path),
        {REPORT_KEY: report.counts()},
    )
    return result


def scores_path(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else folder_of(args.pred_path) / METRICS_FILE


def _input_files(args: argparse.Namespace) -> list[Path]:
    files = [args.pred_path] if args.pred_path.suffix == ".jsonl" else final_files(args.pred_path, STEM)
    return files + ([Path(args.gt)] if args.gt else [])


SCORER = Scorer(
    prog="etchat.eval.qvhighlights",
    parser=build_parser,
    out_path=scores_path,
    input_files=_input_files,
    score=score,
)


def main(argv: list[str] | None = None) -> dict | None:
    """The command line (docs/design.md §13): bad input is one line on stderr and exit status 2; lost queries exit 1
    unless --allow_errors."""
    return run_scorer(SCORER, argv)
