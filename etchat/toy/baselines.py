"""Reference points for E.T. Bench-style scores: a random-span baseline and a side-by-side summary.

    python -m etchat.toy.baselines random_spans <annotations> <out_dir> [--seed 0]
    python -m etchat.toy.baselines summary name=<pred_dir> [name=<pred_dir> ...]

`random_spans` answers every sample by chance in the format its task asks for: a random span (`s - e`) for the
span tasks, a random second for highlights, a random option letter for multiple choice, random spans with a dummy
caption for dense captioning. `summary` prints TVG F1 / mIoU and every task's main score from each folder's
`metrics.json` (written by compute_metrics).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
from pathlib import Path

from etchat.eval.etbench.infer import load_annotations
from etchat.eval.etbench.scorers import OPTION_LETTERS
from etchat.eval.etbench.tasks import TASKS
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


def random_spans(annotations: str, out_dir: str, seed: int = 0) -> Path:
    rng = random.Random(seed)
    samples = [dict(sample, a=random_answer(sample, rng)) for sample in load_annotations(annotations)]
    out = Path(out_dir) / "etbench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, samples)
    logger.info("wrote %d random answers to %s", len(samples), out)
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


def summary(named_dirs: list[tuple[str, str]]) -> list[str]:
    table = {}
    for name, folder in named_dirs:
        metrics_file = Path(folder) / "metrics.json"
        if not metrics_file.is_file():
            raise FileNotFoundError(f"{metrics_file}: run compute_metrics.py on {folder} first")
        table[name] = main_scores(json.loads(metrics_file.read_text()))
    keys = sorted({k for scores in table.values() for k in scores}, key=lambda k: (not k.startswith("tvg"), k))
    width = max(len(k) for k in keys) if keys else 10
    lines = [" " * width + "".join(f"{name:>12}" for name in table)]
    for key in keys:
        lines.append(f"{key:<{width}}" + "".join(f"{table[n].get(key, float('nan')):>12.1f}" for n in table))
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Random-span baseline and score summaries for E.T. Bench files.")
    commands = parser.add_subparsers(dest="command", required=True)
    rand = commands.add_parser("random_spans", help="answer every sample at random in its task's format")
    rand.add_argument("annotations", help="annotation file or folder (annotations/vid)")
    rand.add_argument("out_dir")
    rand.add_argument("--seed", type=int, default=0)
    summ = commands.add_parser("summary", help="print the main scores of several prediction folders side by side")
    summ.add_argument("runs", nargs="+", metavar="NAME=DIR")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "random_spans":
        random_spans(args.annotations, args.out_dir, args.seed)
        return
    runs = []
    for run in args.runs:
        if "=" not in run:
            parser.error(f"expected NAME=DIR, got {run!r}")
        runs.append(tuple(run.split("=", 1)))
    print("\n".join(summary(runs)))


if __name__ == "__main__":
    main()
