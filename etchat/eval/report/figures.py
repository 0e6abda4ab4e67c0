"""The report's figures (PNG, drawn on the Agg canvas without pyplot): per-metric bars of each setting with its
interval next to the published E.T. Chat and the best published model, and the paired differences with theirs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from etchat.eval.protocol import BENCHMARK_NAMES
from etchat.eval.report.analysis import BenchmarkResult

SETTING_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
REFERENCE_COLOR = "#7f7f7f"  # the published E.T. Chat
BEST_COLOR = "#c7c7c7"  # the best published model of each column


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return path


def _series(label: str, heights, color: str, errors=None, names=None) -> dict:
    heights = [np.nan if h is None else h for h in heights]
    return {"label": label, "heights": heights, "errors": errors, "color": color, "names": names}


def _error_bars(setting, metrics: list[str]) -> np.ndarray:
    """2 x metrics distances (percent) from each value down and up to its interval's ends (0 without one)."""
    errors = np.zeros((2, len(metrics)))
    for i, metric in enumerate(metrics):
        interval = setting.intervals.get(metric)
        if interval is not None:
            value = setting.values[metric]
            errors[:, i] = 100 * (value - interval.low), 100 * (interval.high - value)
    return np.clip(errors, 0, None)


def _bar_series(result: BenchmarkResult, metrics: list[str]) -> list[dict]:
    series = []
    for index, setting in enumerate(result.settings):
        heights = [100 * setting.values[m] if m in setting.values else None for m in metrics]
        color = SETTING_COLORS[index % len(SETTING_COLORS)]
        series.append(_series(setting.label, heights, color, _error_bars(setting, metrics)))
    table = result.published
    if table is None:
        return series
    reference = table.reference(result.variant)
    if reference is not None:
        heights = [reference.values.get(m) for m in metrics]
        series.append(_series(f"{reference.model} (published)", heights, REFERENCE_COLOR))
    best = [table.best(result.variant, m) for m in metrics]
    if any(row is not None and row.model != table.reference_model for row in best):
        heights = [None if row is None else row.values[m] for row, m in zip(best, metrics)]
        names = [None if row is None else row.model for row in best]
        series.append(_series("best published", heights, BEST_COLOR, names=names))
    return series


def score_bars(result: BenchmarkResult, path: Path) -> Path:
    """Grouped bars (percent) of the headline metrics: every setting with its interval, the published E.T. Chat and
    the best published model of each metric (named above its bar)."""
    metrics = result.metrics
    if result.published is not None:
        metrics = [m for m in metrics if m in result.published.columns] or metrics
    series = _bar_series(result, metrics)
    x = np.arange(len(metrics))
    width = 0.8 / len(series)
    figure = Figure(figsize=(min(14.0, max(6.0, 0.3 * len(metrics) * len(series))), 4.8))
    axes = figure.add_subplot()
    for i, item in enumerate(series):
        offset = x - 0.4 + width * (i + 0.5)
        axes.bar(offset, item["heights"], width, yerr=item["errors"], color=item["color"], label=item["label"],
                 capsize=2, error_kw={"elinewidth": 0.8})  # fmt: skip
        for position, height, name in zip(offset, item["heights"], item["names"] or ()):
            if name and not np.isnan(height):
                axes.text(position, height + 1, name, rotation=90, ha="center", va="bottom", fontsize=6)
    axes.set_xticks(x, metrics, rotation=40, ha="right")
    axes.set_ylabel("score (%)")
    top = np.nanmax([h for item in series for h in item["heights"]] + [1.0])
    axes.set_ylim(0, top * 1.35 + 1)
    axes.legend(fontsize=7, ncols=min(4, len(series)))
    axes.set_title(f"{BENCHMARK_NAMES.get(result.benchmark, result.benchmark)}: scores with intervals", fontsize=9)
    return _save(figure, path)


def difference_plot(result: BenchmarkResult, path: Path) -> Path:
    """Each comparison's paired difference (percentage points) per metric with its interval; a filled marker is a
    difference whose interval excludes 0."""
    metrics = [m for m in result.metrics if any(m in c.differences for c in result.comparisons)]
    figure = Figure(figsize=(6.5, max(2.5, 0.32 * len(metrics) * len(result.comparisons) + 1)))
    axes = figure.add_subplot()
    y = np.arange(len(metrics))[::-1].astype(float)
    step = 0.7 / max(1, len(result.comparisons))
    for index, comparison in enumerate(result.comparisons):
        color = SETTING_COLORS[(index + 1) % len(SETTING_COLORS)]
        offset = y + 0.35 - step * (index + 0.5)
        for position, metric in zip(offset, metrics):
            if metric not in comparison.differences:
                continue
            value = 100 * comparison.differences[metric]
            interval = comparison.intervals.get(metric)
            filled = interval is not None and interval.excludes_zero()
            if interval is not None:
                axes.plot([100 * interval.low, 100 * interval.high], [position, position], color=color, lw=1.2)
            axes.plot([value], [position], "o", color=color, mfc=color if filled else "white", ms=5)
        axes.plot([], [], "o", color=color, label=f"{comparison.reference} - {comparison.other}")
    axes.axvline(0, color="black", lw=0.8)
    axes.set_yticks(y, metrics, fontsize=7)
    axes.set_xlabel("difference (percentage points) with its interval; filled: the interval excludes 0")
    axes.legend(fontsize=7)
    return _save(figure, path)
