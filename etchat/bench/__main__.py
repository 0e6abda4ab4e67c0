"""`python -m etchat.bench {infer,train,video,memory,scoring,all}`: measure, print a table, append a section to
docs/benchmarks.md."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from etchat.bench import infer, memory, scoring, train, video
from etchat.bench.models import GEOMETRIES
from etchat.bench.report import DEFAULT_OUTPUT, append_section, build_section, command_line, machine_info
from etchat.bench.runner import run_in_process, run_isolated
from etchat.bench.workload import DEFAULT_VIDEO_DIR

logger = logging.getLogger(__name__)

SCENARIOS = {
    "infer": (infer, "E.T.-Bench-shaped inference: the published approach against batched sdpa with decode workers"),
    "train": (train, "stage-3-shaped training steps: eager vs sdpa, with and without gradient checkpointing"),
    "video": (video, "frames/s of the video readers, 1 vs N threads"),
    "memory": (memory, "peak memory of a 224 px and a 4K clip turned into model input"),
    "scoring": (scoring, "E.T. Bench scoring: this project against the released compute_metrics.py (not in `all`)"),
}
# Scenarios that need an input from the user (the released scoring script) and so are not part of `all`.
NEEDS_INPUT = ("scoring",)


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--geometry", choices=GEOMETRIES, default="tiny", help="tiny (CPU) or full (published, GPU)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--configs", help="comma-separated subset of the scenario's configurations")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--video_dir", default=DEFAULT_VIDEO_DIR, help="cache of generated videos")
    parser.add_argument("--video_fps", type=float, default=3.0, help="frame rate of the generated videos")
    parser.add_argument(
        "--video_size",
        type=int,
        default=224,
        help="short side of the generated videos (E.T. Bench's compressed videos: 224)",
    )
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="Markdown file the section is appended to")
    parser.add_argument("--no_append", action="store_true", help="only print the table")
    parser.add_argument(
        "--in_process",
        action="store_true",
        help="run configurations in this process (debugging; peak memory then carries over between configurations)",
    )
    parser.add_argument(
        "--torch_threads",
        type=int,
        help="torch threads of every configuration's model process (default: each configuration's own choice)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per configuration")
    parser.add_argument("--note", help="a remark written into the section (e.g. that the machine was shared)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m etchat.bench", description=__doc__)
    subparsers = parser.add_subparsers(dest="scenario", required=True)
    for name, (module, help_text) in SCENARIOS.items():
        sub = subparsers.add_parser(
            name, help=help_text, description=module.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        _add_common(sub)
        module.add_arguments(sub)
    everything = subparsers.add_parser("all", help="every scenario with its defaults, one section each")
    _add_common(everything)
    return parser


def _load_note() -> str:
    """A warning when other work shared the machine while the scenario ran."""
    if not hasattr(os, "getloadavg"):
        return ""
    load, cores = os.getloadavg()[0], os.cpu_count() or 1
    if load <= cores:
        return ""
    return f"\n- The machine was busy: load average {load:.1f} on {cores} cores at the end of the run; noisy timings."


def run_scenario(name: str, args, argv) -> str:
    module = SCENARIOS[name][0]
    machine = machine_info(args.device)

    def run_one(target: str, config: dict) -> dict:
        return run_in_process(target, config) if args.in_process else run_isolated(target, config, args.timeout)

    body = module.run(args, run_one)
    body += _load_note()
    if args.note:
        body = f"Note: {args.note}\n\n{body}"
    title = f"{name}: {args.device}" if name in NEEDS_INPUT else f"{name}: {args.geometry} geometry on {args.device}"
    section = build_section(title, command_line(argv), machine, body)
    print(section)
    if not args.no_append:
        append_section(args.output, section)
        logger.info("appended to %s", args.output)
    return section


def main(argv=None) -> None:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.scenario != "all":
        scenario_args = [(args.scenario, args, argv)]
    else:
        # `all` takes only the common options; each scenario parses them with its own defaults.
        rest = argv[argv.index("all") + 1 :]
        names = [name for name in SCENARIOS if name not in NEEDS_INPUT]
        scenario_args = [(name, parser.parse_args([name, *rest]), [name, *rest]) for name in names]
    for name, scenario, scenario_argv in scenario_args:
        scenario.device = scenario.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if scenario.geometry == "full" and scenario.device == "cpu" and name != "video":
            logger.warning("the full geometry (5B parameters, 20 GB in fp32) on CPU is very slow; it is meant for GPUs")
        run_scenario(name, scenario, scenario_argv)


if __name__ == "__main__":
    main()
