"""The Markdown report: protocol cards, then per benchmark the scores with their intervals, the placement among
published results, the seed spread, the paired differences and the parse audit."""

from __future__ import annotations

from etchat.eval.protocol import BENCHMARK_NAMES, cards_table
from etchat.eval.report.analysis import BenchmarkResult, SettingResult
from etchat.eval.report.runs import Run
from etchat.eval.sample_scores import AuditGroup

MARK = "*"


def percent(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{100 * value:+.1f}" if signed else f"{100 * value:.1f}"


def _cell(setting: SettingResult, metric: str) -> str:
    if metric not in setting.values:
        return "-"
    text = percent(setting.values[metric])
    if metric in setting.spread:
        text += f" ± {percent(setting.spread[metric].sd)}"
    if metric in setting.intervals:
        interval = setting.intervals[metric]
        text += f" [{percent(interval.low)}, {percent(interval.high)}]"
    return text


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]


def run_name(run: Run, runs_of_setting: int) -> str:
    return run.label if runs_of_setting == 1 else f"{run.label} (seed {run.seed if run.seed is not None else '?'})"


def header_lines(command: str, date: str, version: str, resamples: int, seed: int, level: float) -> list[str]:
    lines = ["# Results report", "", f"Made by `{command}` on {date}, E.T. Chat project {version}.", ""]
    if resamples > 0:
        lines.append(
            f"Values in percent. Brackets: {100 * level:g}% percentile intervals from {resamples:,} bootstrap "
            f"resamples over videos (seed {seed}): a drawn video brings all its questions, and E.T. Bench draws "
            "within each task/source group (docs/design.md §18). `±`: the standard deviation over the runs of a "
            "setting (its seeds). Differences are paired (the same resampled videos for both settings); "
            f"`{MARK}` marks a difference whose interval excludes 0."
        )
    else:
        lines.append("Values in percent; no bootstrap intervals (`--resamples 0`).")
    return [*lines, ""]


def protocol_lines(runs: list[Run]) -> list[str]:
    cards = {}
    for run in runs:
        name = f"{run.label} ({BENCHMARK_NAMES.get(run.benchmark, run.benchmark)}, {run.path})"
        cards[name] = run.card()
    return ["## Protocol", "", *cards_table(cards), ""]


def scores_lines(result: BenchmarkResult, figure: str | None) -> list[str]:
    header = ["metric", *(setting.label for setting in result.settings)]
    rows = [[metric, *(_cell(setting, metric) for setting in result.settings)] for metric in result.metrics]
    lines = ["### Scores", "", *_table(header, rows), ""]
    for setting in result.settings:
        for run in setting.runs:
            lines += [f"- {run_name(run, len(setting.runs))}: {note}" for note in run.notes]
        lines += [f"- {setting.label}: {note}" for note in setting.notes]
    if figure:
        lines += ["", f"![scores]({figure})"]
    return [*lines, ""]


def placement_lines(result: BenchmarkResult) -> list[str]:
    table = result.published
    name = BENCHMARK_NAMES.get(result.benchmark, result.benchmark)
    if table is None:
        return [
            "### Placement among published results",
            "",
            f"The package keeps no published E.T. Chat figures for {name}: the E.T. Bench repository publishes none, "
            "and none was found in the paper's text available to this project.",
            "",
        ]
    variant = result.variant
    columns = [c for c in table.columns if any(c in s.values for s in result.settings)] or list(table.columns)
    source = table.source
    lines = [
        "### Placement among published results",
        "",
        f"{source['table']}, {table.descriptions[variant]}. Source: {source['paper']}; transcribed from "
        f"{source['transcribed_from']}. {source.get('notes', '')}",
        "",
    ]
    rows = [
        [row.model, row.group, *(percent_published(row.values.get(c)) for c in columns)] for row in table.rows(variant)
    ]
    rows += [[f"**{s.label}** (this report)", "", *(_cell_short(s, c) for c in columns)] for s in result.settings]
    lines += _table(["model", "kind", *columns], rows)
    lines += ["", "Rank among the published models (1 = best; ties share the better rank):", ""]
    rank_rows = []
    for setting in result.settings:
        ranks = []
        for column in columns:
            if column not in setting.values:
                ranks.append("-")
                continue
            rank, count = table.rank(variant, column, round(100 * setting.values[column], 1))
            ranks.append(f"{rank}/{count + 1}")
        rank_rows.append([setting.label, *ranks])
    best = [table.best(variant, c) for c in columns]
    rank_rows.append(["best published", *(f"{b.model} {b.values[c]:.1f}" if b else "-" for b, c in zip(best, columns))])
    lines += _table(["", *columns], rank_rows)
    return [*lines, ""]


def percent_published(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _cell_short(setting: SettingResult, metric: str) -> str:
    return "-" if metric not in setting.values else f"**{percent(setting.values[metric])}**"


def seeds_lines(result: BenchmarkResult) -> list[str]:
    settings = [s for s in result.settings if len(s.runs) > 1]
    if not settings:
        return []
    header = ["metric", *(f"{s.label} (n={len(s.runs)})" for s in settings)]
    rows = []
    for metric in result.metrics:
        cells = []
        for setting in settings:
            spread = setting.spread.get(metric)
            if spread is None:
                cells.append("-")
                continue
            value = f"{percent(setting.values[metric])} ± {percent(spread.sd)}"
            cells.append(f"{value} ({percent(spread.low)}-{percent(spread.high)})")
        rows.append([metric, *cells])
    runs = "; ".join(
        f"{s.label}: " + ", ".join(f"{run_name(r, len(s.runs))} {r.path}" for r in s.runs) for s in settings
    )
    return ["### Runs of one setting (seeds)", "", "Mean ± SD (min-max) over the runs.", "", *_table(header, rows),
            "", f"Runs: {runs}", ""]  # fmt: skip


def differences_lines(result: BenchmarkResult, figure: str | None) -> list[str]:
    if not result.comparisons:
        return []
    header = ["metric", *(f"{c.reference} - {c.other}" for c in result.comparisons)]
    rows = []
    for metric in result.metrics:
        cells = []
        for comparison in result.comparisons:
            if metric not in comparison.differences:
                cells.append("-")
                continue
            text = percent(comparison.differences[metric], signed=True)
            interval = comparison.intervals.get(metric)
            if interval is not None:
                text += f" [{percent(interval.low, True)}, {percent(interval.high, True)}]"
                text += f" {MARK}" if interval.excludes_zero() else ""
            cells.append(text)
        rows.append([metric, *cells])
    lines = ["### Paired differences", "", *_table(header, rows), ""]
    for comparison in result.comparisons:
        lines += [f"- {comparison.reference} - {comparison.other}: {note}" for note in comparison.notes]
    if figure:
        lines += ["", f"![differences]({figure})"]
    return [*lines, ""]


def _merged_audit(runs: list[Run]) -> dict[str, AuditGroup]:
    merged: dict[str, AuditGroup] = {}
    for run in runs:
        for name, group in (run.scores.audit if run.scores else {}).items():
            total = merged.setdefault(name, AuditGroup())
            total.answers += group.answers
            for kind, count in group.failures.items():
                total.failures[kind] = total.failures.get(kind, 0) + count
            if not total.examples:
                total.examples = list(group.examples)
    return merged


def audit_lines(result: BenchmarkResult) -> list[str]:
    lines = [
        "### Parse audit",
        "",
        "Answers that gave no usable option letter, time or caption by the official rules (they score 0, or are "
        "decided by sentence similarity for a missing option letter), by kind; the first examples of each kind.",
        "",
    ]
    for setting in result.settings:
        audit = _merged_audit(setting.runs)
        if not audit:
            lines += [f"{setting.label}: no audit (no sample_scores.json.gz).", ""]
            continue
        runs = f" ({len(setting.runs)} runs together)" if len(setting.runs) > 1 else ""
        rows = []
        for name, group in audit.items():
            failed = sum(group.failures.values())
            kinds = ", ".join(f"{kind}: {count}" for kind, count in sorted(group.failures.items(), key=lambda i: -i[1]))
            share = f"{100 * failed / group.answers:.1f}%" if group.answers else "-"
            rows.append([name, str(group.answers), f"{failed} ({share})", kinds or "-"])
        lines += [f"**{setting.label}**{runs}", "", *_table(["task", "answers", "unusable", "by kind"], rows), ""]
        examples = [(name, example) for name, group in audit.items() for example in group.examples]
        if examples:
            lines += ["<details><summary>examples</summary>", ""]
            lines += [f"- {name} `{e['unit']}` ({e['kind']}): {_quote(e['answer'])}" for name, e in examples]
            lines += ["", "</details>", ""]
    return lines


def _quote(text: str) -> str:
    text = " ".join(str(text).split())
    return "(empty)" if not text else "`" + text.replace("`", "'") + "`"


def benchmark_lines(result: BenchmarkResult, figures: dict[str, str]) -> list[str]:
    name = BENCHMARK_NAMES.get(result.benchmark, result.benchmark)
    return [
        f"## {name}",
        "",
        *scores_lines(result, figures.get("scores")),
        *placement_lines(result),
        *seeds_lines(result),
        *differences_lines(result, figures.get("differences")),
        *audit_lines(result),
    ]
