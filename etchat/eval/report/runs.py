"""The runs a report reads: scored prediction folders (``metrics.json``, ``sample_scores.json.gz``, ``run.json``),
their benchmark, their official values and their settings (runs of one setting differ only in their seed)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from etchat.eval.etbench.report import overall_columns, task_score
from etchat.eval.etbench.tasks import CATEGORIES, TASKS, tasks_of
from etchat.eval.protocol import protocol_card
from etchat.eval.run_record import read_run_record
from etchat.eval.sample_scores import SAMPLE_SCORES_FILE, SampleScores
from etchat.io import METRICS_FILE

logger = logging.getLogger(__name__)

BENCHMARK_ORDER = ("etbench", "charades_sta", "qvhighlights", "dvc")
CHARADES_METRICS = ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU")
QVHIGHLIGHTS_METRICS = (
    "MR-full-mAP",
    "MR-full-mAP@0.5",
    "MR-full-mAP@0.75",
    "MR-full-R1@0.5",
    "MR-full-R1@0.7",
    "MR-short-mAP",
    "MR-middle-mAP",
    "MR-long-mAP",
    *(f"HL-min-{level}-{kind}" for level in ("Fair", "Good", "VeryGood") for kind in ("mAP", "Hit1")),
)
DVC_METRICS = ("CIDEr", "METEOR", "Bleu_4", "SODA_c", "Precision", "Recall", "F1")
# How far a value recomputed from sample_scores may lie from metrics.json: the scorers' own rounding.
TOLERANCE = {"etbench": 1e-5, "qvhighlights": 5.1e-5, "charades_sta": 1e-8, "dvc": 1e-8}


@dataclass
class Run:
    label: str
    path: Path
    benchmark: str
    values: dict[str, float]  # official values of the headline metrics, 0-1, from metrics.json
    scores: SampleScores | None
    record: dict | None  # run.json
    metrics: dict
    notes: list[str] = field(default_factory=list)  # why intervals or parts of the report are missing

    @property
    def subset(self) -> bool:
        return bool(self.scores and self.scores.scoring.get("subset"))

    @property
    def seed(self):
        decoding = ((self.record or {}).get("settings") or {}).get("decoding") or {}
        return decoding.get("seed")

    def card(self) -> dict[str, str]:
        scoring = self.scores.scoring if self.scores else {"rules": "not recorded (no sample_scores.json.gz)"}
        return protocol_card(self.record, scoring, self.benchmark, self.metrics)

    def setting_key(self) -> str:
        """What runs of one setting share: the run record without the decoding seed and the creation details."""
        if self.record is None:
            return f"path:{self.path}"
        record = json.loads(json.dumps(self.record))
        for key in ("created", "environment", "project_version"):
            record.pop(key, None)
        ((record.get("settings") or {}).get("decoding") or {}).pop("seed", None)
        return json.dumps(record, sort_keys=True)


def detect_benchmark(metrics: dict, path: Path) -> str:
    """The benchmark of a metrics.json by its layout."""
    if "brief" in metrics:
        return "qvhighlights"
    if "SODA_c" in metrics:
        return "dvc"
    if "R1@0.5" in metrics and "mIoU" in metrics:
        return "charades_sta"
    if any(key in TASKS for key in metrics):
        return "etbench"
    raise ValueError(f"{path}: not a metrics.json of E.T. Bench, Charades-STA, QVHighlights or dense captioning")


def _etbench_values(metrics: dict) -> dict[str, float]:
    tasks = {key: value for key, value in metrics.items() if key in TASKS}
    values, by_task = {}, {}
    for task, metric, column in overall_columns():
        sources = tasks.get(task, {}).values()
        if not sources or not all(isinstance(result.get(metric), (int, float)) for result in sources):
            continue  # a missing task, or a value the scorer wrote as null (not a number)
        values[column] = by_task[task, metric] = task_score(tasks, task, metric)
    for category in CATEGORIES.values():
        for column, metric in category.merged:
            parts = [by_task.get((task, metric)) for task in tasks_of(category.name)]
            if None not in parts:
                values[column] = sum(parts) / len(parts)
    return values


def official_values(benchmark: str, metrics: dict) -> dict[str, float]:
    """The headline metrics of a metrics.json, in 0-1 (QVHighlights reports percent), in report order."""
    if benchmark == "etbench":
        return _etbench_values(metrics)
    if benchmark == "charades_sta":
        return {name: float(metrics[name]) for name in CHARADES_METRICS if name in metrics}
    if benchmark == "qvhighlights":
        brief = metrics.get("brief", {})
        return {name: brief[name] / 100 for name in QVHIGHLIGHTS_METRICS if brief.get(name) is not None}
    return {name: float(metrics[name]) for name in DVC_METRICS if name in metrics}


def check_scores(run: Run) -> None:
    """Keep the sample scores only when they reproduce metrics.json (they belong to the same scoring)."""
    if run.scores is None:
        return
    if run.scores.benchmark != run.benchmark:
        run.notes.append(f"{SAMPLE_SCORES_FILE} is for {run.scores.benchmark}, metrics.json for {run.benchmark}")
        run.scores = None
        return
    recomputed = run.scores.values()
    tolerance = TOLERANCE.get(run.benchmark, 1e-8) + 1e-9
    off = [name for name, value in run.values.items() if abs(recomputed.get(name, value) - value) > tolerance]
    if off:
        run.notes.append(
            f"{SAMPLE_SCORES_FILE} does not reproduce metrics.json ({', '.join(off[:3])}...): rescore the folder"
        )
        run.scores = None


def load_run(label: str, path: Path) -> Run:
    metrics_file = path / METRICS_FILE
    try:
        metrics = json.loads(metrics_file.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{metrics_file}: not valid JSON ({error})") from error
    if not isinstance(metrics, dict):
        raise ValueError(f"{metrics_file}: expected a JSON object")
    benchmark = detect_benchmark(metrics, metrics_file)
    scores_file = path / SAMPLE_SCORES_FILE
    scores = SampleScores.read(scores_file) if scores_file.is_file() else None
    run = Run(label, path, benchmark, official_values(benchmark, metrics), scores, read_run_record(path), metrics)
    if scores is None:
        run.notes.append(f"no {SAMPLE_SCORES_FILE} (scored before per-sample statistics existed): rescore the folder")
    check_scores(run)
    return run


def scored_folders(path: Path) -> list[Path]:
    """A scored prediction folder itself, or the scored folders directly inside ``path`` (a quickstart model folder
    holding etbench/, qvhighlights/, dvc/)."""
    if (path / METRICS_FILE).is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such folder")
    folders = sorted(child for child in path.iterdir() if (child / METRICS_FILE).is_file())
    if not folders:
        raise FileNotFoundError(f"{path}: no {METRICS_FILE} in it or in its subfolders: score the predictions first")
    return folders


def default_label(path: Path, record: dict | None) -> str:
    name = ((record or {}).get("model") or {}).get("name")
    return Path(str(name)).name if name else path.name


def load_runs(specs: list[str]) -> list[Run]:
    """Runs from ``[LABEL=]PATH`` arguments; a PATH holding scored subfolders gives one run per subfolder."""
    runs = []
    for spec in specs:
        label, path_text = spec.split("=", 1) if "=" in spec and not Path(spec).exists() else ("", spec)
        path = Path(path_text)
        for folder in scored_folders(path):
            record = read_run_record(folder)
            name = label or (default_label(folder, record) if folder == path else default_label(path, record))
            runs.append(load_run(name, folder))
    return runs


def group_settings(runs: list[Run]) -> dict[str, dict[str, list[Run]]]:
    """benchmark -> label -> runs (the seeds of one setting), benchmarks in report order, labels in argument order.

    A label names a setting: runs given the same label are its seeds; a run record that differs in more than the
    seed is reported as a note on the later run.
    """
    settings: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        group = settings.setdefault(run.benchmark, {}).setdefault(run.label, [])
        if group and run.record is not None and group[0].record is not None:
            if run.setting_key() != group[0].setting_key():
                run.notes.append(f"its run.json differs from {group[0].path}'s in more than the seed")
        group.append(run)
    order = {name: i for i, name in enumerate(BENCHMARK_ORDER)}
    return dict(sorted(settings.items(), key=lambda item: order.get(item[0], len(order))))
