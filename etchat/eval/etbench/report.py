"""The E.T. Bench report: per-group tables by category, the Overall row (one column per task headline) and the
Merged row (category means), as the official log shows them; and the JSON form of the results."""

from __future__ import annotations

import math

import numpy as np
from tabulate import tabulate

from etchat.eval.etbench.tasks import CATEGORIES, TASKS, tasks_of


def overall_columns() -> list[tuple[str, str, str]]:
    """(task, metric, column) of the Overall row, in the official order."""
    return [(name, metric, column) for name, spec in TASKS.items() for metric, column in spec.headline]


def task_score(collected: dict, task: str, metric: str) -> float | None:
    """A task's value of `metric` (0-1): the rounded mean over its sources; None when the task is missing."""
    if task not in collected:
        return None
    per_source = [result[metric] for result in collected[task].values()]
    return round(sum(per_source) / len(per_source), 5)


def summarize(collected: dict) -> tuple[dict[str, str], dict[str, str]]:
    """The Overall row and the Merged row, x100 with one decimal, '-' when a task is missing."""
    overall = {}
    for task, metric, column in overall_columns():
        value = task_score(collected, task, metric)
        overall[column] = "-" if value is None else str(float(round(value * 100, 1)))
    merged = {}
    for category in CATEGORIES.values():
        for column, metric in category.merged:
            parts = [task_score(collected, task, metric) for task in tasks_of(category.name)]
            merged[column] = "-" if None in parts else str(float(round(sum(parts) * 100 / len(parts), 1)))
    return overall, merged


def _mean_line(label: str, values: list) -> str:
    return f"{label}: {round(sum(values) / len(values), 5)}"


def report_lines(collected: dict) -> list[str]:
    """The per-group tables, their mean lines, and the Overall and Merged rows, as the official log shows them."""
    lines = []
    for category in CATEGORIES.values():
        tasks = tasks_of(category.name)
        rows = [
            [task, source, *(result.get(column, "-") for column in category.columns)]
            for task in tasks
            for source, result in collected.get(task, {}).items()
        ]
        if not rows:
            continue
        headers = ["Task", "Source", *category.columns]
        lines += ["", category.name, "", tabulate(rows, headers=headers)]
        for label, metric in category.means:
            values = [collected[task][source][metric] for task in tasks for source in collected.get(task, {})]
            lines.append(_mean_line(label, values))
        for label, metric in category.task_means:
            for task in tasks:
                if task in collected:
                    values = [result[metric] for result in collected[task].values()]
                    lines.append(_mean_line(f"{task.upper()} {label}", values))

    overall, merged = summarize(collected)
    for title, row in (("Overall", overall), ("Merged", merged)):
        lines += ["", title, "", tabulate([list(row.values())], headers=list(row), disable_numparse=True)]
    return lines


def json_ready(value):
    """Results as plain JSON values: numpy scalars to Python numbers, NaN to null."""
    if isinstance(value, dict):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value
