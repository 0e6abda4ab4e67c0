"""Where this project's E.T. Bench scoring spends its time: `compute_metrics` runs with timers around its phases.

    python -m etchat.bench.scoring_phases PRED_FILE --out phases.json [--runs 2]

Each timer charges time to the innermost phase running on the main thread, so the phases add up to the run: wall
time, and CPU time of the Python process (all its threads, torch's workers included). METEOR answers on a worker
thread while the main thread computes the other caption metrics, so its own wall time and its Java process's CPU time
are given apart, and the main thread's wait for it is part of `score_sets`' row. The PTB tokenizer's row includes its
Java start-up (one per dense-captioning group); its CPU time is that of the finished Java children. Per task: its
groups' wall time with every phase inside (inclusive), and its own Python outside every timed phase (parsing answers,
matching captions, IoUs).

The first run is cold: it loads the sentence model and starts METEOR. Later runs (``--runs``) score the same file again
with the same sentence model and caption scorers, as a report that rescores resamples would: every embedding and every
METEOR statistics line is then cached, and what remains is the cost of a rescoring.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib
import json
import os
import resource
import threading
import time
from collections import defaultdict

# Phase name -> (module, attribute path) of the function that is timed.
PHASES = {
    "sentence model: load": ("etchat.eval.metrics.similarity", "SentenceSimilarity.__init__"),
    "sentence embeddings: batched": ("etchat.eval.metrics.similarity", "SentenceSimilarity.prepare"),
    "sentence embeddings: close calls, each text alone": (
        "etchat.eval.metrics.similarity",
        "SentenceSimilarity.pair_alone",
    ),
    "SentSim: dot products of cached embeddings": ("etchat.eval.metrics.similarity", "SentenceSimilarity.mean_paired"),
    "PTB tokenizer (Java, one run per group)": ("etchat.eval.etbench.dense_captioning", "ptb_tokenize"),
    "METEOR: start the Java process": ("etchat.eval.metrics.meteor", "Meteor.__init__"),
    "caption sets: bookkeeping, waiting for METEOR": ("etchat.eval.metrics.captions", "CaptionScorers.score_sets"),
    "BLEU (Python)": ("pycocoevalcap.bleu.bleu", "Bleu.compute_score"),
    "ROUGE-L (Python)": ("pycocoevalcap.rouge.rouge", "Rouge.compute_score"),
    "CIDEr (Python)": ("pycocoevalcap.cider.cider", "Cider.compute_score"),
}
OUTSIDE = "everything else (loading, grouping, report)"


class PhaseClock:
    """Exclusive wall and process-CPU time per phase of the main thread (time inside a nested phase goes to the nested
    one), inclusive wall time, and calls. On a busy machine read the CPU times: waiting for a core inflates wall time.
    """

    def __init__(self):
        self.reset()
        self._main = threading.main_thread()

    def reset(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.cpu_seconds: dict[str, float] = defaultdict(float)
        self.inclusive: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list] = []  # [name, wall since, cpu since, wall entered]

    def _charge_top(self, wall: float, cpu: float) -> None:
        top = self._stack[-1]
        self.seconds[top[0]] += wall - top[1]
        self.cpu_seconds[top[0]] += cpu - top[2]
        top[1], top[2] = wall, cpu

    @contextlib.contextmanager
    def phase(self, name: str):
        if threading.current_thread() is not self._main:
            yield
            return
        wall, cpu = time.perf_counter(), time.process_time()
        if self._stack:
            self._charge_top(wall, cpu)
        self._stack.append([name, wall, cpu, wall])
        self.calls[name] += 1
        try:
            yield
        finally:
            wall, cpu = time.perf_counter(), time.process_time()
            self._charge_top(wall, cpu)
            self.inclusive[name] += wall - self._stack.pop()[3]
            if self._stack:
                self._stack[-1][1], self._stack[-1][2] = wall, cpu

    def wrap(self, name: str, function):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            with self.phase(name):
                return function(*args, **kwargs)

        return timed


def _resolve(module_name: str, path: str):
    owner = importlib.import_module(module_name)
    *parents, attribute = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    return owner, attribute


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _process_cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def instrument(clock: PhaseClock) -> dict:
    """Wrap the phases' functions, the METEOR worker and each task's scorer (in this process: the scoring modules are
    changed for good). Returns counters the runs add to: METEOR's seconds on its thread, the PTB tokenizer's Java CPU
    seconds."""
    from etchat.eval.etbench import dense_captioning, tasks
    from etchat.eval.metrics.meteor import Meteor

    for name, (module_name, path) in PHASES.items():
        owner, attribute = _resolve(module_name, path)
        setattr(owner, attribute, clock.wrap(name, getattr(owner, attribute)))

    counters = {"meteor_thread_s": 0.0, "ptb_java_cpu_s": 0.0}
    set_scores, tokenize = Meteor.set_scores, dense_captioning.ptb_tokenize

    def timed_set_scores(self, sets):
        start = time.perf_counter()
        try:
            return set_scores(self, sets)
        finally:
            counters["meteor_thread_s"] += time.perf_counter() - start

    def tokenize_with_cpu(texts):
        before = _children_cpu_seconds()
        try:
            return tokenize(texts)
        finally:
            counters["ptb_java_cpu_s"] += _children_cpu_seconds() - before

    Meteor.set_scores, dense_captioning.ptb_tokenize = timed_set_scores, tokenize_with_cpu
    for name, spec in list(tasks.TASKS.items()):
        tasks.TASKS[name] = dataclasses.replace(spec, score=clock.wrap(f"task {name}", spec.score))
    return counters


def _snapshot(clock: PhaseClock, counters: dict, wall: float, cpu: float, meteor_cpu: float) -> dict:
    task_names = [name for name in clock.seconds if name.startswith("task ")]
    return {
        "wall_s": wall,
        "python_cpu_s": cpu,
        "meteor_thread_s": counters["meteor_thread_s"],
        "meteor_java_cpu_s": meteor_cpu,
        "ptb_java_cpu_s": counters["ptb_java_cpu_s"],
        "phases": {name: clock.seconds[name] for name in clock.seconds if name not in task_names},
        "phases_cpu": {name: clock.cpu_seconds[name] for name in clock.seconds if name not in task_names},
        "calls": {name: clock.calls[name] for name in clock.calls if name not in task_names},
        "tasks_inclusive": {name[5:]: clock.inclusive[name] for name in task_names},
        "tasks_own_python": {name[5:]: clock.seconds[name] for name in task_names},
        "tasks_own_python_cpu": {name[5:]: clock.cpu_seconds[name] for name in task_names},
    }


def run_config(config: dict) -> dict:
    """Score `config["pred_file"]` `config["runs"]` times with one sentence model and one METEOR process; the timings
    of each run."""
    from etchat.eval.etbench import compute_metrics
    from etchat.eval.metrics.captions import CaptionScorers
    from etchat.eval.metrics.similarity import SentenceSimilarity

    if config.get("torch_threads"):
        import torch

        torch.set_num_threads(config["torch_threads"])
    clock = PhaseClock()
    counters = instrument(clock)
    device = config.get("device", "cpu")
    args = compute_metrics.parse_args([config["pred_file"], "--device", device])
    runs, similarity, captions = [], None, None
    try:
        for _ in range(config.get("runs", 1)):
            clock.reset()
            counters.update(meteor_thread_s=0.0, ptb_java_cpu_s=0.0)
            meteor_pid = captions._meteor._process.pid if captions is not None and captions._meteor else None
            meteor_before = _process_cpu_seconds(meteor_pid) if meteor_pid else 0.0
            start, cpu_start = time.perf_counter(), time.process_time()
            with clock.phase(OUTSIDE):
                if similarity is None:
                    similarity = SentenceSimilarity(device)
                    captions = CaptionScorers(similarity)
                compute_metrics.run(args, similarity=similarity, caption_scorers=captions)
            meteor_pid = captions._meteor._process.pid if captions._meteor else None
            meteor_cpu = _process_cpu_seconds(meteor_pid) - meteor_before if meteor_pid else 0.0
            wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            runs.append(_snapshot(clock, counters, wall, cpu, meteor_cpu))
    finally:
        if captions is not None:
            captions.close()
    return {"runs": runs}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pred_file", help="prediction file to score (its metrics.json and metrics.log are written)")
    parser.add_argument("--out", required=True, help="JSON file for the timings")
    parser.add_argument("--runs", type=int, default=2, help="scorings of the file: one cold, then warm rescorings")
    parser.add_argument("--device", default="cpu", help="device of the sentence model")
    parser.add_argument("--torch_threads", type=int, help="torch threads (default: torch's choice)")
    args = parser.parse_args(argv)
    config = {
        "pred_file": args.pred_file,
        "device": args.device,
        "runs": args.runs,
        "torch_threads": args.torch_threads,
    }
    result = run_config(config)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
