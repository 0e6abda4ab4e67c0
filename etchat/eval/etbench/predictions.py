"""E.T. Bench prediction files: reading and checking them, grouping by (task, source), and the 470-sample subset."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from etchat.eval.etbench.scorers import describe
from etchat.eval.etbench.tasks import TASKS
from etchat.io import read_records, record_files


def prediction_files(path: str | Path) -> tuple[list[Path], Path]:
    """The .json/.jsonl prediction files of a file or folder, and the folder the metrics go to."""
    path = Path(path)
    return record_files(path), path if path.is_dir() else path.parent


def load_predictions(path: Path) -> list[dict]:
    """Samples of one prediction file, checked for the fields the scorers read."""
    samples = read_records(path)
    for position, sample in enumerate(samples):
        spec = TASKS.get(sample.get("task"))
        if spec is None:
            raise ValueError(f"{path}: sample #{position} has an unknown or missing task {sample.get('task')!r}")
        missing = [key for key in ("idx", "source", "a", *spec.fields) if key not in sample]
        if missing:
            raise ValueError(f"{path}: sample #{position} ({describe(sample)}) lacks {', '.join(missing)}")
        if not isinstance(sample["a"], str):
            raise ValueError(f"{path}: {describe(sample)} has a non-text answer 'a': {sample['a']!r}")
    return samples


def load_subset() -> dict[str, dict[str, list[int]]]:
    """The 470-sample E.T. Bench subset (task -> source -> idx) shipped with the package."""
    return json.loads((resources.files("etchat.eval.etbench") / "subset.json").read_text())


def group_samples(samples: list[dict], subset: dict | None = None) -> dict[str, dict[str, list[dict]]]:
    """task -> source -> samples, in order of first appearance. With a subset, a group may stay empty."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for sample in samples:
        task, source = sample["task"], sample["source"]
        group = groups.setdefault(task, {}).setdefault(source, [])
        if subset is None or sample["idx"] in subset.get(task, {}).get(source, ()):
            group.append(sample)
    return groups
