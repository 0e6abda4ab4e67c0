"""`python -m etchat.data.check ANNOTATIONS VIDEO_ROOT [--decode]`: what a run would lose, before it starts
(docs/design.md §15).

ANNOTATIONS is a training file (LLaVA-style ``conversations``, e.g. et_instruct_164k_vid.json) or E.T. Bench
annotations (a file or a folder of samples with ``q``); VIDEO_ROOT is the folder their ``video`` paths are relative
to. The report lists:

- the samples per task and source;
- malformed samples and ``<vid>`` counts that disagree with ``src`` / ``tgt``: the checks training and inference run;
- missing videos (and images, under ``--image_path``) and unreadable ones (a container probe; ``--decode`` also
  decodes the 1 fps frames as training and inference read them);
- annotation durations more than a second off the file's, and videos whose file length a stage's bounds reject;
- the samples a stage's filters drop (``--stage N`` sets the filters of scripts/train_stage_N.sh; the filter flags
  override them).

The exit status is 1 when a run would lose samples (any problem but durations and filters), else 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from tqdm import tqdm

from etchat.data.dataset import DataArguments, keep_sample, match_token_count, media_file, sample_problem
from etchat.data.sample_checks import (
    LOST,
    WARNINGS,
    Problem,
    RepeatedIds,
    inspect_video,
    time_problem,
    times_are_text,
    video_problems,
)
from etchat.io import write_json_atomic

logger = logging.getLogger(__name__)

# The sample filters of the published stage scripts (scripts/train_stage_{1,2,3}.sh).
STAGE_FILTERS = {
    1: {},
    2: {"max_video_len": 350},
    3: {"min_video_len": 5, "max_video_len": 350, "max_num_words": 200},
}
FILTERS = ("min_video_len", "max_video_len", "min_num_words", "max_num_words", "tasks")
NUM_EXAMPLES = 3
# Videos checked at once. Each decode (--decode) holds one video's 1 fps frames at the model's input size, as
# training and inference do; a few at a time keep the memory of the check that of a few samples.
DEFAULT_WORKERS = 2


@dataclass
class Sample:
    """One annotation sample as the check sees it."""

    name: str
    task: str
    source: str
    video: str | None = None  # path of its video, when it is kept and has one
    duration: float | None = None


@dataclass
class Findings:
    total: int = 0  # samples in the annotations
    samples: list[Sample] = field(default_factory=list)  # those a run would use
    problems: list[Problem] = field(default_factory=list)
    dropped: Counter = field(default_factory=Counter)  # filter -> samples it drops

    @property
    def lost(self) -> list[Problem]:
        return [p for p in self.problems if p.loses_sample]


# ---- reading the samples ---------------------------------------------------------------------------------------------
def is_benchmark(records: list) -> bool:
    first = next((r for r in records if isinstance(r, dict)), {})
    return "q" in first and "conversations" not in first


def check_training(path: str, records: list, options: DataArguments) -> Findings:
    """The checks of `SupervisedDataset` on one training file, and which filter drops each dropped sample."""
    findings = Findings(total=len(records))
    times_as_text = times_are_text(match_token_count(r) for r in records)
    repeated = RepeatedIds()
    for position, record in enumerate(records):
        sample_id = record.get("id", "-") if isinstance(record, dict) else "-"
        name = f"sample {position} (id {sample_id}) of {path}"
        problem = sample_problem(record, name, options, times_as_text)
        if problem is not None:
            findings.problems.append(problem)
            continue
        task, source = str(record.get("task", "-")), str(record.get("source", "-"))
        if not keep_sample(record, options):
            findings.dropped[drop_reason(record, options)] += 1
            continue
        problem = repeated.check(record, name)
        if problem is not None:
            findings.problems.append(problem)
            if problem.loses_sample:
                continue
        video = media_file(record, options) if "video" in record else None
        findings.samples.append(Sample(name, task, source, video, record.get("duration")))
    return findings


def drop_reason(sample: dict, options: DataArguments) -> str:
    """The first filter that drops ``sample`` on its own, as 'flag value'."""
    for name in FILTERS:
        value = getattr(options, name)
        alone = replace(options, **{other: None for other in FILTERS if other != name})
        if value is not None and not keep_sample(sample, alone):
            return f"{name} {','.join(value) if name == 'tasks' else value}"
    return "filters"


def check_benchmark(path: str, video_root: str) -> Findings:
    """The checks of E.T. Bench inference on a file or folder of annotations."""
    from etchat.eval.etbench.infer import read_annotations, sample_key

    samples, problems = read_annotations(path)
    findings = Findings(total=len(samples) + len(problems), problems=list(problems))
    for sample in samples:
        # Inference checks the times against the decoded video; here the annotated duration stands for it.
        times = time_problem(sample, within="the annotated duration")
        if times:
            findings.problems.append(Problem("times", f"sample {sample_key(sample)}: {times}"))
            continue
        video = os.path.join(video_root, sample["video"])
        findings.samples.append(
            Sample(f"sample {sample_key(sample)}", sample["task"], sample["source"], video, sample.get("duration"))
        )
    return findings


# ---- the videos ------------------------------------------------------------------------------------------------------
def check_videos(findings: Findings, options: DataArguments, decode: bool, workers: int) -> None:
    """Probe (or decode) every video once, in ``workers`` threads, and add the problems of the samples using it.
    Decoding reads the 1 fps frames at the size the model's transform takes, as training and inference do."""
    from etchat.data.transforms import build_transform

    short_side = build_transform(options.vision_processor, inference=True).size
    users: dict[str, list[Sample]] = {}
    for sample in findings.samples:
        if sample.video is not None:
            users.setdefault(sample.video, []).append(sample)
    with ThreadPoolExecutor(max(workers, 1)) as pool:
        reports = pool.map(lambda path: inspect_video(path, decode, short_side=short_side), users)
        for report in tqdm(reports, total=len(users), unit="video", desc="decoding" if decode else "probing"):
            samples = users[report.path]
            findings.problems += video_problems(report, [s.name for s in samples], [s.duration for s in samples])
            if report.duration is not None:
                findings.problems += length_problems(report.path, report.duration, samples, options)


def length_problems(path: str, duration: float, samples: list[Sample], options: DataArguments) -> list[Problem]:
    """Samples whose video file is outside the stage's length bounds (training rejects them when loading)."""
    low, high = options.min_video_len, options.max_video_len
    if low is not None and low >= 0 and duration < low:
        bound = f"min_video_len {low}"
    elif high is not None and high >= 0 and duration > high:
        bound = f"max_video_len {high}"
    else:
        return []
    return [Problem("video_length", f"{s.name}: {path} lasts {duration:.1f} s, beyond {bound}") for s in samples]


# ---- the report ------------------------------------------------------------------------------------------------------
def format_report(anno_path: str, findings: Findings) -> str:
    total = findings.total
    lines = [f"{anno_path}: {total} samples", "", f"{'task':<12}{'source':<32}{'samples':>8}"]
    counts = Counter((s.task, s.source) for s in findings.samples)
    lines += [f"{task:<12}{source:<32}{count:>8}" for (task, source), count in sorted(counts.items())]
    lines += ["", f"{'check':<62}{'samples':>8}  first"]
    for kind, title in {**LOST, **WARNINGS}.items():
        found = [p for p in findings.problems if p.kind == kind]
        suffix = " (warning)" if kind in WARNINGS else ""
        lines.append(f"{title + suffix:<62}{len(found):>8}  {found[0].message if found else ''}")
        lines += [f"{'':<72}{p.message}" for p in found[1:NUM_EXAMPLES]]
    dropped = ", ".join(f"{reason}: {count}" for reason, count in findings.dropped.most_common())
    lines.append(f"{'dropped by the filters':<62}{sum(findings.dropped.values()):>8}  {dropped}")
    lost = len(findings.lost)  # at most one per sample: a sample with a problem is not checked further
    usable = total - lost - sum(findings.dropped.values())
    verdict = f"{lost} of {total} samples would be lost" if lost else "no sample would be lost"
    lines += ["", f"RESULT: {verdict}; {usable} usable, {sum(findings.dropped.values())} dropped by the filters"]
    return "\n".join(lines)


def read_findings(anno_path: str, video_root: str, options: DataArguments) -> Findings:
    """The sample checks of a training file or of E.T. Bench annotations (a folder, or a file of ``q`` samples)."""
    if os.path.isdir(anno_path):
        return check_benchmark(anno_path, video_root)
    with open(anno_path) as f:
        records = json.load(f)
    if not isinstance(records, list):
        raise SystemExit(f"{anno_path} must hold a JSON list of samples, got {type(records).__name__}")
    if is_benchmark(records):
        return check_benchmark(anno_path, video_root)
    return check_training(anno_path, records, options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.data.check", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("annotations", help="training annotation file, or E.T. Bench annotation file / folder")
    parser.add_argument("video_root", help="folder the samples' video paths are relative to")
    parser.add_argument("--decode", action="store_true", help="decode every video's 1 fps frames, not just probe it")
    parser.add_argument("--image_path", help="folder the samples' image paths are relative to (training files)")
    parser.add_argument("--stage", type=int, choices=sorted(STAGE_FILTERS), help="the published filters of a stage")
    parser.add_argument("--min_video_len", type=float, help="drop samples shorter than this (s)")
    parser.add_argument("--max_video_len", type=float, help="drop samples longer than this (s)")
    parser.add_argument("--min_num_words", type=int, help="drop samples whose first answer is shorter")
    parser.add_argument("--max_num_words", type=int, help="drop samples whose first answer is longer")
    parser.add_argument("--tasks", help="keep only these tasks (comma-separated)")
    parser.add_argument("--gather_conv_query", action="store_true", help="as training's flag: video in turn 1 only")
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULT_WORKERS,
        help=f"videos checked at once (threads; default {DEFAULT_WORKERS}: each --decode holds one video's frames)",
    )
    parser.add_argument(
        "--vision_processor", default="clip_center_224", help="the model's frame transform: --decode reads at its size"
    )
    parser.add_argument("--report", help="also write every problem to this JSON file")
    return parser


def data_options(args: argparse.Namespace) -> DataArguments:
    filters = dict(STAGE_FILTERS.get(args.stage, {}))
    for name in FILTERS:
        if getattr(args, name) is not None:
            filters[name] = getattr(args, name)
    if isinstance(filters.get("tasks"), str):
        filters["tasks"] = [t for t in filters["tasks"].split(",") if t]
    return DataArguments(
        image_folder=args.image_path,
        video_folder=args.video_root,
        gather_conv_query=args.gather_conv_query,
        vision_processor=args.vision_processor,
        **filters,
    )


def main(argv: list[str] | None = None) -> int:
    from etchat.cli import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging()
    options = data_options(args)
    findings = read_findings(args.annotations, args.video_root, options)
    check_videos(findings, options, args.decode, args.workers)
    print(format_report(args.annotations, findings))
    if args.report:
        write_json_atomic(
            args.report,
            {
                "samples": findings.total,
                "problems": [{"kind": p.kind, "message": p.message} for p in findings.problems],
                "dropped": dict(findings.dropped),
            },
            indent=1,
        )
    return 1 if findings.lost else 0


if __name__ == "__main__":
    raise SystemExit(main())
