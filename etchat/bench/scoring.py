"""`scoring` scenario: this project's E.T. Bench scoring against the released `compute_metrics.py`, side by side.

Both commands score the same prediction file (by default the full-size synthetic one: 7,289 samples in the 20
(task, source) groups, `python -m etchat.toy.predictions --scale 1 --seed 0`), each in a fresh copy of the file so
neither reads the other's outputs, as whole processes: start-up, model loading and Java included. Runs alternate
(project, release, release, project, ...) so that a change in the machine's load hits both. Per run: wall time, CPU
time of the process and its children, and peak memory: of the largest single process (its VmHWM) and of the whole
process tree (Python plus its Java children, their resident sizes summed, sampled every 0.2 s). The release runs
through `python -m etchat.bench.official_scoring` (offline, seed 0, videos in file order); afterwards every value of
each release run's `metrics.json` is compared with the project's.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from etchat.bench.report import format_table
from etchat.toy.predictions import make_predictions

logger = logging.getLogger(__name__)

SAMPLE_EVERY_S = 0.2
CONTESTANTS = ("project", "release")


def add_arguments(parser) -> None:
    parser.add_argument("--script", help="the released compute_metrics.py (subset.json beside it); needed by --repeats")
    parser.add_argument("--predictions", help="prediction file to score (default: the synthetic one of --scale)")
    parser.add_argument("--scale", type=float, default=1.0, help="size of the synthetic file (1: 7,289 samples)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each command (the table gives the median)")
    parser.add_argument(
        "--profile_runs",
        type=int,
        default=2,
        help="then score the file this many times in one instrumented process (one cold run, warm rescorings) and "
        "tell where the time goes; 0: no profile",
    )
    parser.add_argument("--work_dir", default="work_dirs/bench_scoring", help="where the runs' copies and outputs go")


def _children(pid_to_parent: dict[int, int], root: int) -> list[int]:
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in pid_to_parent.items() if parent in frontier]
        tree += frontier
    return tree


def _process_table() -> dict[int, int]:
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    # The command name may hold spaces; the parent pid is the second field after its closing ')'.
                    table[int(entry)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    return table


def _memory_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process in KiB, (0, 0) once it is gone."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return rss, hwm


class TreeMemory:
    """Samples a process tree until `stop()`: the peak of the summed resident sizes and the largest VmHWM seen."""

    def __init__(self, root: int):
        self.root, self.tree_peak_kib, self.process_peak_kib = root, 0, 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._done.is_set():
            total = 0
            for pid in _children(_process_table(), self.root):
                rss, hwm = _memory_kib(pid)
                total += rss
                self.process_peak_kib = max(self.process_peak_kib, hwm)
            self.tree_peak_kib = max(self.tree_peak_kib, total)
            self._done.wait(SAMPLE_EVERY_S)

    def stop(self) -> None:
        self._done.set()
        self._thread.join()


def measure(command: list[str], log_path: Path, env: dict | None = None) -> dict:
    """Run `command` to its end; wall seconds, CPU seconds of it and its children, peak MiB, exit status."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        memory = TreeMemory(process.pid)
        returncode = process.wait()
    wall = time.perf_counter() - start
    memory.stop()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "tree_peak_mib": memory.tree_peak_kib / 1024,
        "process_peak_mib": memory.process_peak_kib / 1024,
        "returncode": returncode,
    }


def commands(script: str, pred_file: Path, device: str) -> dict[str, list[str]]:
    python = sys.executable
    return {
        "project": [python, "-m", "etchat.eval.etbench", str(pred_file), "--device", device],
        "release": [
            python,
            "-m",
            "etchat.bench.official_scoring",
            "--script",
            script,
            str(pred_file),
            "--device",
            device,
        ],
    }


def metric_values(metrics: dict) -> dict[tuple[str, str, str], float]:
    """The per-group values of a `metrics.json` ({task: {source: {metric: value}}}); other top-level keys (a run
    report, say) are not scores and are left out."""
    values = {}
    for task, sources in metrics.items():
        if not isinstance(sources, dict) or not all(isinstance(group, dict) for group in sources.values()):
            continue
        for source, group in sources.items():
            for metric, value in group.items():
                if isinstance(value, (int, float)):
                    values[(task, source, metric)] = value
    return values


def compare(reference: dict, candidate: dict) -> dict:
    """How many of the reference's values the candidate has, equal, and the largest difference (and where)."""
    ref, cand = metric_values(reference), metric_values(candidate)
    missing = sorted(set(ref) - set(cand))
    differences = {key: abs(cand[key] - value) for key, value in ref.items() if key in cand and cand[key] != value}
    worst = max(differences, key=differences.get) if differences else None
    return {
        "values": len(ref),
        "equal": len(ref) - len(missing) - len(differences),
        "missing": missing,
        "max_difference": differences[worst] if worst else 0.0,
        "where": worst,
    }


def _prediction_file(args, work_dir: Path) -> Path:
    if args.predictions:
        return Path(args.predictions)
    path = work_dir / f"etbench_synthetic_scale{args.scale:g}_seed{args.seed}.json"
    if not path.exists():
        samples = make_predictions(scale=args.scale, seed=args.seed)
        path.write_text(json.dumps(samples))
    return path


def run(args, run_one) -> str:
    if args.repeats and not args.script:
        raise SystemExit("scoring: --script (the released compute_metrics.py) is needed to compare; or --repeats 0")
    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    source = _prediction_file(args, work_dir)
    samples = len(json.loads(source.read_text()))
    sections = [f"Workload: `{source.name}`, {samples} samples."]
    if args.repeats:
        rows, outputs = _compare_runs(args, source, work_dir)
        sections.append(_comparison(args, rows, outputs))
    if args.profile_runs:
        run_dir = _fresh_copy(source, work_dir / "profile")
        config = {"pred_file": str(run_dir / source.name), "device": args.device, "runs": args.profile_runs}
        config["torch_threads"] = args.torch_threads
        sections.append(profile_table(run_one("etchat.bench.scoring_phases:run_config", config)["runs"]))
    return "\n\n".join(sections)


def _fresh_copy(source: Path, run_dir: Path) -> Path:
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    shutil.copy(source, run_dir / source.name)
    return run_dir


def _environment(torch_threads: int | None) -> dict | None:
    """Both commands' environment: with `--torch_threads`, torch (and the libraries under it) use that many threads.
    On an oversubscribed machine two threads per process can run several times slower than one."""
    if not torch_threads:
        return None
    return {**os.environ, **dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS"), str(torch_threads))}


def _compare_runs(args, source: Path, work_dir: Path) -> tuple[list[dict], dict]:
    script = str(Path(args.script).resolve())
    order = [CONTESTANTS if i % 2 == 0 else CONTESTANTS[::-1] for i in range(args.repeats)]
    rows, outputs = [], {name: [] for name in CONTESTANTS}
    for i, names in enumerate(order):
        for name in names:
            run_dir = _fresh_copy(source, work_dir / f"{name}_{i}")
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            logger.info(f"run {i + 1}/{args.repeats}: {name} (load average {load:.1f})")
            command = commands(script, run_dir / source.name, args.device)[name]
            result = measure(command, run_dir / "stdout.log", _environment(args.torch_threads))
            metrics_file = run_dir / "metrics.json"
            if not metrics_file.exists():
                log = run_dir / "stdout.log"
                raise RuntimeError(f"{name} run {i + 1} wrote no metrics.json (exit {result['returncode']}); see {log}")
            outputs[name].append(json.loads(metrics_file.read_text()))
            rows.append({"run": f"{name} {i + 1}", "load avg at start": load, **result})
            logger.info(f"{name} {i + 1}: {result['wall_s']:.1f} s, tree peak {result['tree_peak_mib']:.0f} MiB")
    return rows, outputs


def _median(rows: list[dict], name: str, key: str) -> float:
    return statistics.median(row[key] for row in rows if row["run"].startswith(name + " "))


def _comparison(args, rows: list[dict], outputs: dict) -> str:
    columns = ["run", "load avg at start", "wall_s", "cpu_s", "process_peak_mib", "tree_peak_mib", "returncode"]
    medians = [
        {"run": f"{name}, median", **{key: _median(rows, name, key) for key in columns[2:6]}} for name in CONTESTANTS
    ]
    ratio = medians[1]["wall_s"] / medians[0]["wall_s"]
    lines = [
        f"{args.repeats} runs of each command, alternating"
        + (f"; both with {args.torch_threads} torch thread(s)." if args.torch_threads else "."),
        "",
        format_table(columns, rows + medians),
        "",
        f"- Wall time, median: the release {medians[1]['wall_s']:.1f} s, this project {medians[0]['wall_s']:.1f} s: "
        f"{ratio:.1f}x. Peak of the process tree (Python + Java): {medians[1]['tree_peak_mib']:.0f} vs "
        f"{medians[0]['tree_peak_mib']:.0f} MiB.",
    ]
    project = outputs["project"][0]
    for name, runs in outputs.items():
        for i, metrics in enumerate(runs):
            if name == "project" and i == 0:
                continue
            result = compare(metrics if name == "release" else project, project if name == "release" else metrics)
            where = "/".join(result["where"]) if result["where"] else "-"
            lines.append(
                f"- {name} run {i + 1} vs project run 1: {result['equal']} of {result['values']} values equal, "
                f"{len(result['missing'])} missing, largest difference {result['max_difference']:.2g} ({where})."
            )
    return "\n".join(lines)


def profile_table(runs: list[dict]) -> str:
    """Seconds per phase of each instrumented run (wall, and CPU of the Python process), then per task."""
    phases = list(dict.fromkeys(name for run in runs for name in run["phases"]))
    rows = []
    for name in phases:
        row = {"phase": name}
        for i, run in enumerate(runs):
            row[f"run {i + 1} wall_s"] = run["phases"].get(name, 0.0)
            row[f"run {i + 1} cpu_s"] = run["phases_cpu"].get(name, 0.0)
        rows.append(row)
    total = {"phase": "all (Python process)"}
    for i, run in enumerate(runs):
        total[f"run {i + 1} wall_s"], total[f"run {i + 1} cpu_s"] = run["wall_s"], run["python_cpu_s"]
    columns = ["phase"] + [f"run {i + 1} {kind}" for i in range(len(runs)) for kind in ("wall_s", "cpu_s")]
    tasks = list(dict.fromkeys(name for run in runs for name in run["tasks_inclusive"]))
    task_rows = [
        {
            "task": task,
            **{f"run {i + 1} inclusive wall_s": run["tasks_inclusive"].get(task, 0.0) for i, run in enumerate(runs)},
            **{f"run {i + 1} own cpu_s": run["tasks_own_python_cpu"].get(task, 0.0) for i, run in enumerate(runs)},
        }
        for task in tasks
    ]
    task_columns = ["task"] + [f"run {i + 1} inclusive wall_s" for i in range(len(runs))]
    task_columns += [f"run {i + 1} own cpu_s" for i in range(len(runs))]
    java = [
        f"run {i + 1}: METEOR worker {run['meteor_thread_s']:.1f} s wall, METEOR Java {run['meteor_java_cpu_s']:.1f} s "
        f"CPU, PTB tokenizer Java {run['ptb_java_cpu_s']:.1f} s CPU"
        for i, run in enumerate(runs)
    ]
    return "\n".join(
        [
            "Where the time goes (`python -m etchat.bench.scoring_phases`; run 1 cold, later runs rescore the file "
            "with the same sentence model and METEOR process; phases exclusive, main thread):",
            "",
            format_table(columns, rows + [total]),
            "",
            format_table(task_columns, task_rows),
            "",
            "Java, beside the Python process: " + "; ".join(java) + ".",
        ]
    )
