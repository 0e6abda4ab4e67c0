"""Bootstrap over videos (docs/design.md §18).

A resample draws, within each stratum (an E.T. Bench task/source group; the whole benchmark elsewhere), as many
videos as the stratum has, with replacement, and keeps every question of a drawn video as many times as it was drawn
(a cluster bootstrap: questions about one video are not independent). Each metric is then recomputed from the
weighted per-sample statistics (`etchat.eval.sample_scores`), so corpus-level metrics (F1 of mean precision and
recall, means over parsed answers, per-video caption scores) are recomputed per resample, not averaged per sample.

The draws depend only on the seed, the stratum's name and its set of videos, so every run evaluated on the same
samples sees the same resamples: differences between settings are paired, and the runs of one setting (its seeds)
are averaged resample by resample.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from etchat.eval.sample_scores import SampleScores, Stratum, formula_strata, formula_values, weighted_sums

DEFAULT_RESAMPLES = 1000
DEFAULT_LEVEL = 0.95


def cluster_weights(clusters: Sequence[str], resamples: int, seed: int, stratum: str) -> np.ndarray:
    """How often each of the (sorted, distinct) clusters is drawn in each resample: resamples x clusters counts,
    each row summing to the number of clusters."""
    count = len(clusters)
    if count == 0:
        return np.zeros((resamples, 0))
    rng = np.random.default_rng([seed, zlib.crc32(stratum.encode())])
    return rng.multinomial(count, np.full(count, 1 / count), size=resamples).astype(np.float64)


def common_strata(runs: Sequence[SampleScores], metrics: Sequence[str]) -> dict[str, list[Stratum]]:
    """For each stratum the metrics read: every run's rows for the samples all runs have, in one order, with the first
    run's videos as clusters (so all runs are weighted alike)."""
    needed = set().union(*(formula_strata(runs[0].metrics[m]) for m in metrics)) if metrics else set()
    strata = {}
    for name in sorted(needed):
        tables = [run.strata[name] for run in runs]
        shared = set(tables[0].units).intersection(*(table.units for table in tables[1:]))
        units = [unit for unit in tables[0].units if unit in shared]
        first = tables[0].subset(units)
        strata[name] = [first] + [Stratum(units, first.clusters, table.subset(units).columns) for table in tables[1:]]
    return strata


@dataclass
class Resampled:
    """Each run's metrics on every resample (`values`) and on the common samples themselves (`at_sample`)."""

    values: list[dict[str, np.ndarray]]
    at_sample: list[dict[str, float]]
    samples: int  # the samples all runs have, in the strata the metrics read
    complete: bool  # whether those are all the samples of every run there


def resampled_metrics(runs: Sequence[SampleScores], metrics: Sequence[str], resamples: int, seed: int) -> Resampled:
    """Each metric of each run on every resample, the runs restricted to the samples they all have (the same samples
    when they answered the same benchmark), so that their resamples pair up."""
    strata = common_strata(runs, metrics)
    sums: list[dict] = [{} for _ in runs]
    full: list[dict] = [{} for _ in runs]
    for name, tables in strata.items():  # one stratum's draws at a time: memory stays at resamples x its videos
        weights = cluster_weights(sorted(set(tables[0].clusters)), resamples, seed, name)
        for index, table in enumerate(tables):
            sums[index][name], full[index][name] = weighted_sums(table, weights), weighted_sums(table)
    per_run = [{m: formula_values(run.metrics[m], sums[i]) for m in metrics} for i, run in enumerate(runs)]
    at_sample = [{m: float(formula_values(run.metrics[m], full[i])[0]) for m in metrics} for i, run in enumerate(runs)]
    common = sum(len(tables[0].units) for tables in strata.values())
    complete = all(
        len(run.strata[name].units) == len(tables[0].units) for name, tables in strata.items() for run in runs
    )
    return Resampled(per_run, at_sample, common, complete)


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def percentile_interval(values: np.ndarray, level: float = DEFAULT_LEVEL) -> Interval:
    """The percentile interval of resampled values (numpy's linear interpolation between order statistics)."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return Interval(float(low), float(high))
