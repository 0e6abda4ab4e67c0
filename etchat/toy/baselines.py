"""Reference points for the quickstart's scores: a random-span baseline and a side-by-side summary.

    python -m etchat.toy.baselines random_spans <annotations> <out_dir> [--benchmark etbench] [--seed 0]
    python -m etchat.toy.baselines summary name=<run_dir> [name=<run_dir> ...]

`random_spans` answers every sample by chance, in the prediction files inference would write for the benchmark
(``--benchmark``): for E.T. Bench a random span (`s - e`) for the span tasks, a random second for highlights, a
random option letter for multiple choice, random spans with a dummy caption for dense captioning; for QVHighlights
one random window and a random score per clip; for dense captioning three random spans with a dummy caption.
`summary` prints, for each run folder, TVG F1 / mIoU and every E.T. Bench task's main score (from
``etbench/metrics.json``) and the headline scores of ``qvhighlights/metrics.json`` and ``dvc/metrics.json`` when
they exist.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

from etchat.cli import setup_logging
from etchat.data.etbench import load_annotations
from etchat.eval.dvc.infer import load_videos
from etchat.eval.etbench.scorers import OPTION_LETTERS
from etchat.eval.etbench.tasks import TASKS
from etchat.eval.qvhighlights.infer import load_queries
from etchat.eval.qvhighlights.metrics import num_clips
from etchat.io import write_json_atomic

logger = logging.getLogger(__name__)


def _random_span(rng: random.Random, duration: float) -> tuple[int, int]:
    start, end = sorted(rng.uniform(0, duration) for _ in range(2))
    return round(start), round(end)


def random_answer(sample: dict, rng: random.Random) -> str:
    task, duration = sample["task"], float(sample["duration"])
    if TASKS[task].options:
        return f"({OPTION_LETTERS[rng.randrange(len(sample['o']))]})"
    if task == "vhd":
        return f"The highlight moment happens in {round(rng.uniform(0, duration))}."
    if task in ("dvc", "slc"):
        return " ".join(f"{s} - {e}, an event happens." for s, e in (_random_span(rng, duration) for _ in range(3)))
    if task in ("tal", "evs"):
        return ", ".join("{} - {}".format(*_random_span(rng, duration)) for _ in range(2))
    return "{} - {}".format(*_random_span(rng, duration))


def random_qvhighlights_record(sample: dict, rng: random.Random) -> dict:
    duration = float(sample["duration"])
    if sample["task"] == "mr":
        return {**sample, "response": "", "pred_relevant_windows": [[*_random_span(rng, duration), 1.0]]}
    return {**sample, "response": "", "pred_saliency_scores": [rng.random() for _ in range(num_clips(duration))]}


def random_dvc_record(sample: dict, rng: random.Random) -> dict:
    spans = [_random_span(rng, float(sample["duration"])) for _ in range(3)]
    proposals = [{"sentence": "an event happens.", "timestamp": list(span)} for span in spans]
    return {**sample, "response": "", "proposals": proposals}


# benchmark: (read its annotations, answer one sample at random, prediction file name)
RANDOM_ANSWERS = {
    "etbench": (load_annotations, lambda sample, rng: dict(sample, a=random_answer(sample, rng)), "etbench.json"),
    "qvhighlights": (load_queries, random_qvhighlights_record, "qvhighlights.json"),
    "dvc": (load_videos, random_dvc_record, "dvc.json"),
}


def random_spans(annotations: str, out_dir: str, seed: int = 0, benchmark: str = "etbench") -> Path:
    load, answer, name = RANDOM_ANSWERS[benchmark]
    rng = random.Random(seed)
    records = [answer(sample, rng) for sample in load(annotations)]
    out = Path(out_dir) / name
    write_json_atomic(out, records)
    logger.info("wrote %d random answers to %s", len(records), out)
    return out


def main_scores(metrics: dict) -> dict[str, float]:
    """Per task, the mean over sources of its headline metric (F1, Acc, Rec...), x100."""
    scores = {}
    for task, sources in metrics.items():
        values = {}
        for result in sources.values():
            for key in ("F1", "Acc", "Rec", "mIoU"):
                if isinstance(result, dict) and key in result:
                    values.setdefault(key, []).append(result[key])
        for key, vals in values.items():
            scores[f"{task} {key}"] = 100 * sum(vals) / len(vals)
    return scores


# Headline scores of the other benchmarks, as (row name, path in metrics.json, scale to percent).
QVHIGHLIGHTS_ROWS = (
    ("qvh MR-full-mAP", ("brief", "MR-full-mAP"), 1),
    ("qvh MR-full-R1@0.5", ("brief", "MR-full-R1@0.5"), 1),
    ("qvh HL-min-VeryGood-mAP", ("brief", "HL-min-VeryGood-mAP"), 1),
    ("qvh HL-min-VeryGood-Hit1", ("brief", "HL-min-VeryGood-Hit1"), 1),
)
DVC_ROWS = (
    ("densecap F1", ("F1",), 100),
    ("densecap CIDEr", ("CIDEr",), 100),
    ("densecap METEOR", ("METEOR",), 100),
    ("densecap SODA_c", ("SODA_c",), 100),
)


def benchmark_scores(run_dir: Path) -> dict[str, float]:
    """The rows of one run folder: E.T. Bench's (required), QVHighlights' and dense captioning's (when scored)."""
    metrics_file = run_dir / "etbench" / "metrics.json"
    if not metrics_file.is_file():
        raise FileNotFoundError(f"{metrics_file}: run compute_metrics.py on {metrics_file.parent} first")
    scores = main_scores(json.loads(metrics_file.read_text()))
    for folder, rows in (("qvhighlights", QVHIGHLIGHTS_ROWS), ("dvc", DVC_ROWS)):
        path = run_dir / folder / "metrics.json"
        if path.is_file():
            metrics = json.loads(path.read_text())
            for row, keys, scale in rows:
                value = metrics
                for key in keys:
                    value = value[key]
                scores[row] = float("nan") if value is None else scale * value
    return scores


def summary(named_dirs: list[tuple[str, str]]) -> list[str]:
    table = {name: benchmark_scores(Path(folder)) for name, folder in named_dirs}
    etbench = sorted(
        {k for scores in table.values() for k in scores if not k.startswith(("qvh ", "densecap "))},
        key=lambda k: (not k.startswith("tvg"), k),
    )
    others = [row for row, _, _ in QVHIGHLIGHTS_ROWS + DVC_ROWS if any(row in scores for scores in table.values())]
    keys = etbench + others
    width = max(len(k) for k in keys) if keys else 10
    lines = [" " * width + "".join(f"{name:>12}" for name in table)]
    for key in keys:
        lines.append(f"{key:<{width}}" + "".join(f"{table[n].get(key, float('nan')):>12.1f}" for n in table))
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.toy.baselines",
        description="Random-span baselines and score summaries of quickstart runs.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    rand = commands.add_parser("random_spans", help="answer every sample at random in its task's format")
    rand.add_argument("annotations", help="annotation file or folder (annotations/vid for E.T. Bench)")
    rand.add_argument("out_dir")
    rand.add_argument("--benchmark", choices=tuple(RANDOM_ANSWERS), default="etbench")
    rand.add_argument("--seed", type=int, default=0)
    summ = commands.add_parser("summary", help="print the main scores of several run folders side by side")
    summ.add_argument(
        "runs", nargs="+", metavar="NAME=DIR", help="a run folder holding etbench/ (and qvhighlights/, dvc/)"
    )
    return parser


def main(argv=None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    if args.command == "random_spans":
        random_spans(args.annotations, args.out_dir, args.seed, args.benchmark)
        return
    runs = []
    for run in args.runs:
        if "=" not in run:
            parser.error(f"expected NAME=DIR, got {run!r}")
        runs.append(tuple(run.split("=", 1)))
    print("\n".join(summary(runs)))


if __name__ == "__main__":
    main()
