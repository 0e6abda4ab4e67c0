"""The numbers of a report: per benchmark, each setting's values with their bootstrap intervals and seed spread, and
each setting's paired difference from the reference setting (docs/design.md §18)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from etchat.eval.report.bootstrap import Interval, percentile_interval, resampled_metrics
from etchat.eval.report.published import PublishedTable, load_published
from etchat.eval.report.runs import Run


@dataclass
class Spread:
    """The runs of one setting (different seeds): their standard deviation (n - 1), range and count."""

    sd: float
    low: float
    high: float
    runs: int


@dataclass
class SettingResult:
    label: str
    runs: list[Run]
    values: dict[str, float]  # official values, the mean over the setting's runs
    spread: dict[str, Spread] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """``reference - other`` per metric, on the samples both answered, with its paired bootstrap interval."""

    reference: str
    other: str
    differences: dict[str, float] = field(default_factory=dict)
    intervals: dict[str, Interval] = field(default_factory=dict)
    samples: int = 0
    notes: list[str] = field(default_factory=list)


@dataclass
class BenchmarkResult:
    benchmark: str
    metrics: list[str]
    settings: list[SettingResult]
    comparisons: list[Comparison]
    published: PublishedTable | None
    variant: str  # which published table the runs compare with: "full" or "subset"


def _shared_metrics(runs: list[Run], metrics: list[str]) -> list[str]:
    """The metrics every run has, with the same formula (the same strata) in each."""
    first = runs[0].scores.metrics
    return [m for m in metrics if m in first and all(run.scores.metrics.get(m) == first[m] for run in runs)]


def _with_scores(runs: list[Run]) -> bool:
    return all(run.scores is not None for run in runs)


def _setting(label: str, runs: list[Run], metrics: list[str], resamples: int, seed: int, level: float):
    values, spread = {}, {}
    for metric in metrics:
        found = [run.values[metric] for run in runs if metric in run.values]
        if not found:
            continue
        values[metric] = float(np.mean(found))
        if len(found) > 1:
            spread[metric] = Spread(float(np.std(found, ddof=1)), min(found), max(found), len(found))
    result = SettingResult(label, runs, values, spread)
    if resamples <= 0:
        return result
    if not _with_scores(runs):
        result.notes.append("no intervals: " + "; ".join(note for run in runs for note in run.notes))
        return result
    shared = _shared_metrics(runs, [m for m in metrics if m in values])
    if not shared:
        result.notes.append("no intervals: its runs' statistics do not share their metrics' formulas")
        return result
    resampled = resampled_metrics([run.scores for run in runs], shared, resamples, seed)
    for metric in shared:
        result.intervals[metric] = percentile_interval(np.mean([r[metric] for r in resampled.values], axis=0), level)
    if not resampled.complete:
        result.notes.append(f"intervals over the {resampled.samples} samples all its runs answered")
    return result


def _comparison(reference: SettingResult, other: SettingResult, metrics, resamples: int, seed: int, level: float):
    comparison = Comparison(reference.label, other.label)
    runs = reference.runs + other.runs
    if not _with_scores(runs):
        comparison.notes.append("no paired intervals: a run has no usable sample_scores.json.gz")
        shared = [m for m in metrics if m in reference.values and m in other.values]
        comparison.differences = {m: reference.values[m] - other.values[m] for m in shared}
        return comparison
    shared = _shared_metrics(runs, [m for m in metrics if m in reference.values and m in other.values])
    if not shared:
        comparison.notes.append("nothing to compare: the settings' statistics share no metric formula")
        return comparison
    resampled = resampled_metrics([run.scores for run in runs], shared, max(resamples, 1), seed)
    split = len(reference.runs)
    comparison.samples = resampled.samples
    if not resampled.complete:
        comparison.notes.append(f"compared on the {resampled.samples} samples both settings answered")
    for metric in shared:
        if resampled.complete:  # the official values themselves
            comparison.differences[metric] = reference.values[metric] - other.values[metric]
        else:
            values = [sample[metric] for sample in resampled.at_sample]
            comparison.differences[metric] = float(np.mean(values[:split]) - np.mean(values[split:]))
        if resamples > 0:
            per_run = [r[metric] for r in resampled.values]
            difference = np.mean(per_run[:split], axis=0) - np.mean(per_run[split:], axis=0)
            comparison.intervals[metric] = percentile_interval(difference, level)
    return comparison


def published_variant(runs: list[Run]) -> str:
    """The published table to compare with: the subset one when the runs were scored on the subset."""
    return "subset" if runs and all(run.subset for run in runs) else "full"


def analyse_benchmark(
    benchmark: str,
    settings: dict[str, list[Run]],
    resamples: int,
    seed: int,
    level: float,
    reference: str | None = None,
) -> BenchmarkResult:
    """Values, intervals, seed spreads and paired differences from the reference setting (the first by default)."""
    metrics = list(dict.fromkeys(m for runs in settings.values() for run in runs for m in run.values))
    results = [_setting(label, runs, metrics, resamples, seed, level) for label, runs in settings.items()]
    comparisons = []
    base = next((r for r in results if r.label == reference), results[0]) if results else None
    for result in results:
        if result is not base:
            comparisons.append(_comparison(base, result, metrics, resamples, seed, level))
    all_runs = [run for runs in settings.values() for run in runs]
    return BenchmarkResult(
        benchmark, metrics, results, comparisons, load_published(benchmark), published_variant(all_runs)
    )
