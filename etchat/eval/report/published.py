"""Published results kept with the package (``published/<benchmark>.json``), each with its source: the E.T. Bench
paper's Table 1 (full set and 470-sample subset) and E.T. Chat's published Charades-STA figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources


@dataclass(frozen=True)
class PublishedRow:
    model: str
    group: str
    values: dict[str, float | None]  # column -> percent (None: not reported)


@dataclass(frozen=True)
class PublishedTable:
    benchmark: str
    source: dict
    columns: tuple[str, ...]
    variants: dict[str, tuple[PublishedRow, ...]]  # "full" / "subset" -> rows in the published order
    descriptions: dict[str, str]
    reference_model: str  # the model this project re-implements (E.T. Chat)
    chance: dict[str, float]

    def rows(self, variant: str) -> tuple[PublishedRow, ...]:
        return self.variants.get(variant, ())

    def reference(self, variant: str) -> PublishedRow | None:
        return next((row for row in self.rows(variant) if row.model == self.reference_model), None)

    def best(self, variant: str, column: str) -> PublishedRow | None:
        """The published row with the highest value of a column (the first one on ties)."""
        rows = [row for row in self.rows(variant) if row.values.get(column) is not None]
        return max(rows, key=lambda row: row.values[column], default=None)

    def rank(self, variant: str, column: str, value: float) -> tuple[int, int]:
        """(1 + how many published rows score strictly higher, how many rows report the column)."""
        values = [row.values[column] for row in self.rows(variant) if row.values.get(column) is not None]
        return 1 + sum(v > value for v in values), len(values)


def load_published(benchmark: str) -> PublishedTable | None:
    """The published table of a benchmark, or None when the package keeps none for it."""
    path = resources.files("etchat.eval.report") / "published" / f"{benchmark}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    columns = tuple(data["columns"])
    variants, descriptions = {}, {}
    for name, table in data["tables"].items():
        descriptions[name] = table["description"]
        variants[name] = tuple(
            PublishedRow(row["model"], row["group"], dict(zip(columns, row["values"]))) for row in table["rows"]
        )
    return PublishedTable(
        benchmark, data["source"], columns, variants, descriptions, data["reference_model"], data.get("chance", {})
    )
