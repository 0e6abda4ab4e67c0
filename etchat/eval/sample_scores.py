"""The per-sample statistics behind a scored run: what the report needs for confidence intervals and for its parse
audit (docs/design.md §18).

Every scorer writes ``sample_scores.json.gz`` next to its ``metrics.json``. It holds, for each stratum (an E.T. Bench
task/source group; the whole benchmark elsewhere), one row per scored sample (its name, its video, and numeric
columns such as its IoU or its video's CIDEr), and for each reported metric a formula that recomputes the metric from
weighted column sums. With every weight 1 a formula gives the scorer's own value; with the weights of a bootstrap
resample it gives the value the official code would give on the resampled samples (docs/design.md §18 says where the
two differ). Formulas are nested lists:

* ``["unit_mean", stratum, column]``: the weighted mean of a column over the stratum's samples;
* ``["sum_ratio", stratum, numerator, denominator]``: the ratio of two weighted column sums (0 when the denominator
  is 0), e.g. a mean over the parsed answers only;
* ``["mean", formula, ...]``: the plain mean of several values (thresholds, sources, tasks);
* ``["f1", precision, recall]``: 2PR / (P + R), 0 when both are 0.

The file also keeps the parse audit (answers per task, failures by kind, the first few failed answers) and what the
scorer did (``scoring``: the official-rule variant and options, filled in by `etchat.eval.protocol`). It is gzipped
JSON, so that no scorer that reads every ``.json`` file of a prediction folder takes it for predictions.
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from etchat.io import atomic_path, without_non_finite

SAMPLE_SCORES_FILE = "sample_scores.json.gz"
FORMAT = 1
MAX_EXAMPLES = 3  # failed answers kept per audit group and kind
ANSWER_CHARS = 300  # an example answer is cut to this length
UNITS = "#units"  # the implicit column of ones: its weighted sum is the resample's sample count

Formula = list


@dataclass
class Stratum:
    """One stratum's samples: their names (to pair runs), their videos (the bootstrap's clusters) and their columns."""

    units: list[str]
    clusters: list[str]
    columns: dict[str, list[float]]

    def __post_init__(self) -> None:
        if len(self.clusters) != len(self.units):
            raise ValueError(f"{len(self.units)} samples but {len(self.clusters)} videos")
        for name, values in self.columns.items():
            if len(values) != len(self.units):
                raise ValueError(f"column {name!r} has {len(values)} values for {len(self.units)} samples")

    def subset(self, units: Sequence[str]) -> Stratum:
        """The rows of the given sample names, in that order."""
        index = {unit: i for i, unit in enumerate(self.units)}
        rows = [index[unit] for unit in units]
        columns = {name: [values[i] for i in rows] for name, values in self.columns.items()}
        return Stratum(list(units), [self.clusters[i] for i in rows], columns)


@dataclass
class AuditGroup:
    """The parse audit of one task: answers seen, failures by kind, the first failed answers of each kind."""

    answers: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    examples: list[dict] = field(default_factory=list)

    def add(self, unit: str, kind: str | None, answer: str | None) -> None:
        self.answers += 1
        if kind is None:
            return
        self.failures[kind] = self.failures.get(kind, 0) + 1
        if self.failures[kind] <= MAX_EXAMPLES:
            text = "" if answer is None else str(answer)
            if len(text) > ANSWER_CHARS:
                text = text[:ANSWER_CHARS] + "..."
            self.examples.append({"unit": unit, "kind": kind, "answer": text})


@dataclass
class SampleScores:
    benchmark: str  # etbench, charades_sta, qvhighlights, dvc
    strata: dict[str, Stratum]
    metrics: dict[str, Formula]  # reported metric -> formula (values in 0-1)
    audit: dict[str, AuditGroup] = field(default_factory=dict)
    scoring: dict = field(default_factory=dict)

    def values(self) -> dict[str, float]:
        """Every metric at the full sample (all weights 1)."""
        sums = {name: full_sums(stratum) for name, stratum in self.strata.items()}
        return {metric: float(formula_values(formula, sums)[0]) for metric, formula in self.metrics.items()}

    def to_json(self) -> dict:
        return without_non_finite(
            {
                "format": FORMAT,
                "benchmark": self.benchmark,
                "scoring": self.scoring,
                "metrics": self.metrics,
                "strata": {name: vars(stratum) for name, stratum in self.strata.items()},
                "audit": {name: vars(group) for name, group in self.audit.items()},
            }
        )

    @classmethod
    def from_json(cls, data: Mapping, source: str = "sample scores") -> SampleScores:
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"{source}: not a format-{FORMAT} sample-scores file")
        try:
            strata = {}
            for name, stratum in data["strata"].items():
                columns = {key: [math.nan if v is None else float(v) for v in values]
                           for key, values in stratum["columns"].items()}  # fmt: skip
                strata[name] = Stratum(list(stratum["units"]), list(stratum["clusters"]), columns)
            audit = {name: AuditGroup(**group) for name, group in data.get("audit", {}).items()}
            return cls(data["benchmark"], strata, dict(data["metrics"]), audit, dict(data.get("scoring", {})))
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"{source}: malformed sample-scores file ({error})") from error

    def write(self, path: str | Path) -> None:
        """Gzipped JSON, written atomically; the same content gives the same bytes (no time stamp in the header)."""
        payload = json.dumps(self.to_json(), ensure_ascii=False, allow_nan=False).encode()
        with atomic_path(path) as tmp, open(tmp, "wb") as raw:
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as f:
                f.write(payload)
            raw.flush()
            os.fsync(raw.fileno())

    @classmethod
    def read(cls, path: str | Path) -> SampleScores:
        try:
            with gzip.open(path, "rt") as f:
                data = json.load(f)
        except (OSError, json.JSONDecodeError, EOFError) as error:
            raise ValueError(f"{path}: unreadable sample-scores file ({error})") from error
        return cls.from_json(data, str(path))


# --------------------------------------------------------------------------------------------------------------------
# Evaluating formulas on weighted sums
# --------------------------------------------------------------------------------------------------------------------


def cluster_table(stratum: Stratum) -> tuple[list[str], list[str], np.ndarray]:
    """(clusters in sorted order, column names incl. `UNITS`, a clusters x columns array of per-cluster sums)."""
    clusters = sorted(set(stratum.clusters))
    names = [*stratum.columns, UNITS]
    table = np.zeros((len(clusters), len(names)))
    index = {c: i for i, c in enumerate(clusters)}
    rows = np.array([index[c] for c in stratum.clusters], dtype=int)
    values = np.array([*stratum.columns.values(), np.ones(len(stratum.units))], dtype=np.float64).T
    if len(rows):
        np.add.at(table, rows, values)
    return clusters, names, table


def weighted_sums(stratum: Stratum, weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Column sums of a stratum under cluster weights (resamples x clusters, clusters in sorted order; None: one
    resample with every weight 1): ``{column: (resamples,)}``."""
    clusters, names, table = cluster_table(stratum)
    if weights is None:
        weights = np.ones((1, len(clusters)))
    if weights.shape[1] != len(clusters):
        raise ValueError(f"weights for {weights.shape[1]} clusters, the stratum has {len(clusters)}")
    sums = weights @ table
    return {name: sums[:, i] for i, name in enumerate(names)}


def full_sums(stratum: Stratum) -> dict[str, np.ndarray]:
    return weighted_sums(stratum)


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator != 0, numerator / np.where(denominator != 0, denominator, 1), 0.0)


def _column(sums: Mapping[str, Mapping[str, np.ndarray]], stratum: str, column: str) -> np.ndarray:
    try:
        values = sums[stratum]
    except KeyError as error:
        raise ValueError(f"formula names the unknown stratum {stratum!r}") from error
    if column in values:
        return values[column]
    if not values[UNITS].any():  # an empty stratum (an E.T. Bench subset group) has no columns
        return np.zeros_like(values[UNITS])
    raise ValueError(f"formula names the unknown column {column!r} of stratum {stratum!r}")


def formula_values(formula: Formula, sums: Mapping[str, Mapping[str, np.ndarray]]) -> np.ndarray:
    """A formula's value for every resample, from ``{stratum: weighted_sums(...)}``."""
    op, *args = formula
    if op == "unit_mean":
        stratum, column = args
        return _divide(_column(sums, stratum, column), _column(sums, stratum, UNITS))
    if op == "sum_ratio":
        stratum, numerator, denominator = args
        return _divide(_column(sums, stratum, numerator), _column(sums, stratum, denominator))
    if op == "mean":
        return np.mean([formula_values(part, sums) for part in args], axis=0)
    if op == "f1":
        precision, recall = (formula_values(part, sums) for part in args)
        return _divide(2 * precision * recall, precision + recall)
    raise ValueError(f"unknown formula operation {op!r}")


def formula_strata(formula: Formula) -> set[str]:
    """The strata a formula reads."""
    op, *args = formula
    if op in ("unit_mean", "sum_ratio"):
        return {args[0]}
    return set().union(*(formula_strata(part) for part in args))
