"""Dense video captioning scores (YouCook2, ActivityNet Captions), as the official ActivityNet dense-captioning
evaluation and SODA compute them (docs/design.md §17).

    python -m etchat.eval.dvc work_dirs/etchat-stage-3/youcook2               # E.T. Chat's inference output
    python -m etchat.eval.dvc submission.json --references val_1.json val_2.json [--out metrics.json]

The prediction is either the output of ``etchat.eval.dvc.infer`` (its ``dvc*.json`` files, or their folder), which is
first written as the challenge submission ``dvc_submission.json`` next to it and whose records carry their
references (unless ``--references`` is given), or a submission ``{"results": {video: [{"sentence", "timestamp"}]}}``.

Scores (values in 0-1, CIDEr can exceed 1; the log shows them x100): CIDEr, METEOR, BLEU-1..4 and ROUGE-L averaged
over tIoU 0.3 / 0.5 / 0.7 / 0.9, event-localisation Precision, Recall and their F1, and SODA_c, then the
per-threshold table and ``input_report``, the count of what was wrong with the submission. Videos lost (absent from
the submission, or failed in inference) score 0 and make the exit status 1. Next to the scores file:
``sample_scores.json.gz`` and ``protocol.md`` for the results report (docs/design.md §18). Needs Java (PTB tokenizer,
METEOR).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from etchat.eval.dvc.formats import (
    STEM,
    SubmissionReport,
    check_references,
    load_references,
    parse_submission,
    read_json,
    reference_videos,
    submission_from_records,
)
from etchat.eval.dvc.metrics import MAX_PROPOSALS, measure_dense_captioning
from etchat.eval.dvc.sample_scores import dvc_sample_scores
from etchat.eval.metrics.captions import CaptionScorers
from etchat.eval.protocol import record_scoring
from etchat.eval.results import final_files
from etchat.eval.sample_scores import SampleScores
from etchat.io import METRICS_FILE, read_records, write_json_atomic

logger = logging.getLogger(__name__)

SUBMISSION_FILE = "dvc_submission.json"
REPORT_KEY = "input_report"
HEADLINE = ("CIDEr", "METEOR", "Bleu_4", "SODA_c", "Precision", "Recall", "F1")


def evaluate(
    submission: dict,
    references: list[dict],
    source: str = "submission",
    max_proposals: int = MAX_PROPOSALS,
    scorers: CaptionScorers | None = None,
) -> tuple[dict, SubmissionReport]:
    """The scores of a submission against one or more reference files, and the count of its problems. ``scorers``
    (started here when not given) hold the METEOR process."""
    scores, report, _ = evaluate_with_samples(submission, references, source, max_proposals, scorers)
    return scores, report


def evaluate_with_samples(
    submission: dict,
    references: list[dict],
    source: str = "submission",
    max_proposals: int = MAX_PROPOSALS,
    scorers: CaptionScorers | None = None,
) -> tuple[dict, SubmissionReport, SampleScores]:
    """`evaluate`, plus the per-video statistics behind the scores (docs/design.md §18)."""
    proposals, report = parse_submission(submission, references, source, max_proposals)
    videos = reference_videos(references)
    own = scorers is None
    scorers = scorers or CaptionScorers()
    try:
        scores, per_video = measure_dense_captioning(proposals, references, videos, scorers, max_proposals)
    finally:
        if own:
            scorers.close()
    return scores, report, dvc_sample_scores(per_video, videos, proposals, source)


def _folder(path: Path) -> Path:
    return path if path.is_dir() else path.parent


def read_inputs(pred_path: Path, reference_paths: list[str] | None) -> tuple[dict, list[dict], int]:
    """(submission, reference files, inference errors) of a submission or of inference output."""
    references = [load_references(path) for path in reference_paths or []]
    data = read_json(pred_path) if pred_path.is_file() else None
    if isinstance(data, dict):
        if not references:
            raise ValueError(f"{pred_path}: a submission needs its reference files (--references)")
        return data, references, 0
    records = [record for file in final_files(pred_path, STEM) for record in read_records(file)]
    submission, record_references = submission_from_records(records)
    out = _folder(pred_path) / SUBMISSION_FILE
    write_json_atomic(out, submission)
    logger.info("Wrote the submission of %d videos to %s", len(submission["results"]), out)
    if not references:
        references = [check_references(record_references, f"the references of {pred_path}")]
    return submission, references, sum("error" in record for record in records)


def log_result(result: dict, report: SubmissionReport) -> None:
    for name in HEADLINE:
        logger.info("%-10s %.2f", name, 100 * result[name])
    problems = report.problems()
    if problems:
        logger.warning("Input problems: %s", ", ".join(f"{key} {value}" for key, value in problems.items()))
    if report.lost():
        shown = ", ".join(map(repr, report.missing_videos[:5]))
        logger.error(
            "%d of %d videos had no prediction%s and %d inference records failed: these scores are a lower bound",
            report.missing_predictions,
            report.videos,
            f" (e.g. {shown})" if shown else "",
            report.inference_errors,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.eval.dvc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pred_path", help="inference output (dvc*.json file or folder) or a submission .json")
    parser.add_argument("--references", nargs="+", help="reference files (default: those the records carry)")
    parser.add_argument("--max_proposals", type=int, default=MAX_PROPOSALS, help="proposals kept per video")
    parser.add_argument("--out", help=f"scores file (default: {METRICS_FILE} next to the predictions)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    pred_path = Path(args.pred_path)
    submission, references, errors = read_inputs(pred_path, args.references)
    result, report, samples = evaluate_with_samples(submission, references, str(pred_path), args.max_proposals)
    report.inference_errors = errors
    result[REPORT_KEY] = report.counts()
    out = Path(args.out) if args.out else _folder(pred_path) / METRICS_FILE
    record_scoring(out.parent, pred_path, samples, result)
    write_json_atomic(out, result, indent=2)
    log_result(result, report)
    logger.info("Wrote %s", out)
    if report.lost():
        sys.exit(1)
    return result
