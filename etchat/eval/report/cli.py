"""``python -m etchat.eval.report RUN [RUN ...] --out DIR``: a Markdown report with PNG figures of scored runs.

A RUN is ``[LABEL=]PATH``: a scored prediction folder of any benchmark (E.T. Bench, Charades-STA, QVHighlights, dense
captioning: the folder holding ``metrics.json``), or a folder whose subfolders are scored folders (a quickstart
model folder with etbench/, qvhighlights/, dvc/). Runs given the same LABEL are one setting run with different seeds:
the report shows their mean, spread and the interval of their mean. The first setting (or ``--reference``) is
compared with each other one, pairwise, on the same resampled videos. Example (the quickstart's three models):

    python -m etchat.eval.report trained=work_dirs/quickstart/stage-3 untrained=work_dirs/quickstart/untrained \\
        random=work_dirs/quickstart/random --out work_dirs/quickstart/report

Writes ``DIR/report.md``, ``DIR/<benchmark>_scores.png``, ``DIR/<benchmark>_differences.png`` (with two or more
settings) and ``DIR/report.json`` (every number of the report). Intervals need the scorers' ``sample_scores.json.gz``
(written by every scorer since the report exists: rescore older folders).
"""

from __future__ import annotations

import argparse
import datetime
import logging
import shlex
import sys
import time
from pathlib import Path

from etchat.eval.report.analysis import BenchmarkResult, analyse_benchmark
from etchat.eval.report.bootstrap import DEFAULT_LEVEL, DEFAULT_RESAMPLES
from etchat.eval.report.document import benchmark_lines, header_lines, protocol_lines
from etchat.eval.report.figures import difference_plot, score_bars
from etchat.eval.report.runs import group_settings, load_runs
from etchat.io import atomic_path, write_json_atomic
from etchat.version import project_version

logger = logging.getLogger(__name__)
REPORT_FILE = "report.md"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.eval.report", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("runs", nargs="+", metavar="RUN", help="[LABEL=]PATH of a scored folder (or of their parent)")
    parser.add_argument("--out", required=True, help="folder for report.md, report.json and the figures")
    parser.add_argument(
        "--resamples", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (0: no intervals)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    parser.add_argument("--level", type=float, default=DEFAULT_LEVEL, help="interval coverage (default 0.95)")
    parser.add_argument("--reference", help="the setting the others are compared with (default: the first)")
    args = parser.parse_args(argv)
    if not 0 < args.level < 1:
        parser.error("--level must lie between 0 and 1")
    if args.resamples < 0:
        parser.error("--resamples must not be negative")
    return args


def _result_json(result: BenchmarkResult) -> dict:
    def interval(value):
        return None if value is None else [value.low, value.high]

    return {
        "metrics": result.metrics,
        "published_table": None if result.published is None else result.variant,
        "settings": {
            s.label: {
                "runs": [str(run.path) for run in s.runs],
                "values": s.values,
                "intervals": {m: interval(i) for m, i in s.intervals.items()},
                "spread": {m: vars(spread) for m, spread in s.spread.items()},
                "notes": s.notes + [note for run in s.runs for note in run.notes],
            }
            for s in result.settings
        },
        "differences": [
            {
                "reference": c.reference,
                "other": c.other,
                "samples": c.samples,
                "values": c.differences,
                "intervals": {m: interval(i) for m, i in c.intervals.items()},
                "excludes_zero": {m: i.excludes_zero() for m, i in c.intervals.items()},
                "notes": c.notes,
            }
            for c in result.comparisons
        ],
    }


def make_report(args: argparse.Namespace, command: str) -> Path:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs = load_runs(args.runs)
    settings = group_settings(runs)
    if args.reference and not any(args.reference in by_label for by_label in settings.values()):
        raise ValueError(
            f"--reference {args.reference!r} names no setting (labels: {', '.join({r.label for r in runs})})"
        )
    date = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    lines = header_lines(command, date, project_version(), args.resamples, args.seed, args.level)
    lines += protocol_lines(runs)
    numbers = {"command": command, "date": date, "resamples": args.resamples, "seed": args.seed, "level": args.level}
    numbers["benchmarks"] = {}
    for benchmark, by_label in settings.items():
        start = time.perf_counter()
        result = analyse_benchmark(benchmark, by_label, args.resamples, args.seed, args.level, args.reference)
        logger.info("%s: %d settings, %d runs, %.1f s", benchmark, len(by_label), sum(map(len, by_label.values())),
                    time.perf_counter() - start)  # fmt: skip
        figures = {"scores": score_bars(result, out / f"{benchmark}_scores.png").name}
        if result.comparisons:
            figures["differences"] = difference_plot(result, out / f"{benchmark}_differences.png").name
        lines += benchmark_lines(result, figures)
        numbers["benchmarks"][benchmark] = _result_json(result)
    report = out / REPORT_FILE
    with atomic_path(report) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    write_json_atomic(out / "report.json", numbers, indent=1)
    return report


def main(argv: list[str] | None = None) -> Path:
    """The command line: bad input is one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    command = "python -m etchat.eval.report " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        report = make_report(args, command)
    except (OSError, ValueError) as error:
        print(f"etchat.eval.report: error: {' '.join(str(error).split())}", file=sys.stderr)
        raise SystemExit(2) from error
    logger.info("Wrote %s", report)
    print(report)
    return report
