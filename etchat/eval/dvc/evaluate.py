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
the submission, or failed in inference) score 0 and make the exit status 1 unless ``--allow_errors``; a video found
twice with different proposals is refused, naming both places; bad input is one line and exit status 2 (the contract
every scorer shares, `etchat.eval.scoring`). Next to the scores file: ``sample_scores.json.gz`` and
``protocol.md`` for the results report (docs/design.md §18). Needs Java (PTB tokenizer, METEOR).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from etchat.eval.dvc.formats import (
    STEM,
    SubmissionReport,
    check_references,
    load_references,
    parse_submission,
    reference_videos,
    submission_from_records,
)
from etchat.eval.dvc.metrics import MAX_PROPOSALS, measure_dense_captioning
from etchat.eval.dvc.sample_scores import dvc_sample_scores
from etchat.eval.metrics.captions import CaptionScorers
from etchat.eval.protocol import record_scoring
from etchat.eval.results import final_files
from etchat.eval.sample_scores import SampleScores
from etchat.eval.scoring import (
    REPORT_KEY,
    InputReport,
    Scorer,
    add_scoring_args,
    folder_of,
    load_json_objects,
    run_scorer,
    unique_records,
)
from etchat.io import METRICS_FILE, read_records, write_json_atomic

logger = logging.getLogger(__name__)

SUBMISSION_FILE = "dvc_submission.json"
__all__ = ["REPORT_KEY", "SUBMISSION_FILE", "evaluate", "main"]
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


def _video_key(record: dict) -> str:
    return str(record.get("video_id"))


def read_inputs(pred_path: Path, reference_paths: list[str] | None, report: InputReport) -> tuple[dict, list[dict]]:
    """(submission, reference files) of a submission or of inference output; a video found twice is kept once when
    the copies are identical and refused when they differ; failed records are counted."""
    references = [load_references(path, load_json_objects(path)) for path in reference_paths or []]
    data = load_json_objects(pred_path, report) if pred_path.is_file() else None
    if isinstance(data, dict):
        if not references:
            raise ValueError(f"{pred_path}: a submission needs its reference files (--references)")
        return data, references
    files = final_files(pred_path, STEM)
    records = unique_records([(file, read_records(file)) for file in files], _video_key, report)
    report.count_failed(records, _video_key)
    submission, record_references = submission_from_records(records)
    out = folder_of(pred_path) / SUBMISSION_FILE
    write_json_atomic(out, submission)
    logger.info("Wrote the submission of %d videos to %s", len(submission["results"]), out)
    if not references:
        references = [check_references(record_references, f"the references of {pred_path}")]
    return submission, references


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.eval.dvc", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_scoring_args(parser, "inference output (dvc*.json file or folder) or a submission .json")
    parser.add_argument("--references", nargs="+", help="reference files (default: those the records carry)")
    parser.add_argument("--max_proposals", type=int, default=MAX_PROPOSALS, help="proposals kept per video")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def score(args: argparse.Namespace, report: InputReport) -> dict:
    pred_path = Path(args.pred_path)
    if args.max_proposals < 1:
        raise ValueError(f"--max_proposals must be >= 1, got {args.max_proposals}")
    submission, references = read_inputs(pred_path, args.references, report)
    result, submission_report, samples = evaluate_with_samples(
        submission, references, str(pred_path), args.max_proposals
    )
    submission_report.inference_errors = report.failed_inference
    report.samples = submission_report.videos
    report.missing = submission_report.missing_predictions
    report.lost += report.missing
    report.lost_examples += [repr(video) for video in submission_report.missing_videos[:3]]
    report.unparsable = max(submission_report.no_proposals - report.failed_inference, 0)
    report.details = submission_report.counts()
    log_result(result, submission_report)
    record_scoring(scores_path(args).parent, pred_path, samples, {REPORT_KEY: report.counts()})
    return result


def scores_path(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else folder_of(args.pred_path) / METRICS_FILE


def _input_files(args: argparse.Namespace) -> list[Path]:
    pred_path = Path(args.pred_path)
    files = [pred_path] if pred_path.is_file() and pred_path.name != SUBMISSION_FILE else []
    files = files or final_files(pred_path, STEM)
    return files + [Path(path) for path in args.references or []]


SCORER = Scorer(
    prog="etchat.eval.dvc",
    parser=build_parser,
    out_path=scores_path,
    input_files=_input_files,
    score=score,
    indent=2,
)


def main(argv: list[str] | None = None) -> dict:
    """The command line (docs/design.md §13): bad input is one line on stderr and exit status 2; lost videos exit 1
    unless --allow_errors."""
    return run_scorer(SCORER, argv)
