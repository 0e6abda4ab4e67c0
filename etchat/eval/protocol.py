"""The protocol card: what produced a score, written by every scorer next to ``metrics.json`` (``protocol.md``)
and shown at the top of the results report (docs/design.md §18).

It says which model (name, resolved revision, weights digest), which frames (fps, frame count limits, frame size),
which prompts (digest of the prompt set), which decoding (greedy or sampling and its settings, the seed), which
official-rule variant scored it, the project versions of inference and scoring, the hardware and the dates. The
inference side comes from the run record ``run.json`` (`etchat.eval.run_record`); a folder without one says so on
every line that needs it, rather than guessing.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

from etchat.eval.run_record import read_run_record
from etchat.eval.sample_scores import SAMPLE_SCORES_FILE, SampleScores
from etchat.io import atomic_path
from etchat.version import project_version

PROTOCOL_FILE = "protocol.md"
NOT_RECORDED = "not recorded (no run.json in the prediction folder)"
SCORING_ENVIRONMENT = ("project_version", "date", "machine")
INPUT_TOTALS = ("queries", "videos", "samples", "total")  # counts in input_report that are not problems
BENCHMARK_NAMES = {
    "etbench": "E.T. Bench",
    "charades_sta": "Charades-STA",
    "qvhighlights": "QVHighlights",
    "dvc": "Dense video captioning",
}


def scoring_environment() -> dict:
    """What the scorer ran on and when (goes into the sample-scores file's ``scoring``)."""
    return {
        "project_version": project_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }


def _settings_text(settings: dict | None) -> str:
    if not isinstance(settings, dict) or not settings:
        return "not recorded"
    return ", ".join(f"{key} {'-' if value is None else value}" for key, value in settings.items())


def _decoding_text(decoding: dict | None) -> str:
    if not isinstance(decoding, dict) or not decoding:
        return "not recorded"
    mode = "greedy" if decoding.get("greedy") else "sampling"
    rest = {key: value for key, value in decoding.items() if key != "greedy"}
    return f"{mode}; {_settings_text(rest)}"


def _scoring_text(scoring: dict) -> str:
    options = [f"{key} {value}" for key, value in scoring.items() if key not in ("rules", *SCORING_ENVIRONMENT)]
    rules = scoring.get("rules", "not recorded")
    return f"{rules} ({', '.join(options)})" if options else rules


def _input_report_text(metrics: dict | None) -> str | None:
    report = (metrics or {}).get("input_report")
    if not isinstance(report, dict):
        return None
    problems = {
        key: value
        for key, value in report.items()
        if key not in INPUT_TOTALS and isinstance(value, (int, float)) and not isinstance(value, bool) and value
    }
    return ", ".join(f"{key} {value}" for key, value in problems.items()) or "none"


def protocol_card(run: dict | None, scoring: dict, benchmark: str, metrics: dict | None = None) -> dict[str, str]:
    """The card's lines (field -> text) from a run record (None when the folder has none), the scorer's ``scoring``
    information and, when given, the scores' ``metrics.json`` (its ``input_report``)."""
    name = BENCHMARK_NAMES.get(benchmark, benchmark)
    card = {"benchmark": f"{name} (470-sample subset)" if scoring.get("subset") else name}
    if run is None:
        for key in ("model", "revision", "weights digest", "frames", "prompt set digest", "decoding", "dtype"):
            card[key] = NOT_RECORDED
    else:
        model, settings = run.get("model") or {}, run.get("settings") or {}
        card["model"] = str(model.get("name", "not recorded"))
        card["revision"] = model.get("revision") or "none (a local folder)"
        card["weights digest"] = model.get("weights_digest") or "none"
        card["frames"] = _settings_text(settings.get("video"))
        card["prompt set digest"] = str(settings.get("prompts_digest", "not recorded"))
        card["decoding"] = _decoding_text(settings.get("decoding"))
        card["dtype"] = str(settings.get("dtype", "not recorded"))
    card["scoring rules"] = _scoring_text(scoring)
    inputs = _input_report_text(metrics)
    if inputs is not None:
        card["input problems"] = inputs
    inference_version = NOT_RECORDED if run is None else run.get("project_version", "not recorded")
    card["project version"] = f"inference {inference_version}; scoring {scoring.get('project_version', '?')}"
    card["hardware"] = NOT_RECORDED if run is None else _settings_text(run.get("environment"))
    created = NOT_RECORDED if run is None else run.get("created", "not recorded")
    card["date"] = f"inference {created}; scored {scoring.get('date', '?')} on {scoring.get('machine', '?')}"
    return card


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def card_lines(card: dict[str, str]) -> list[str]:
    """The card as a two-column Markdown table."""
    return ["| protocol | |", "|---|---|", *(f"| {key} | {_cell(value)} |" for key, value in card.items())]


def cards_table(cards: dict[str, dict[str, str]]) -> list[str]:
    """Several runs' cards side by side: one row per field, one column per run."""
    fields = list(dict.fromkeys(key for card in cards.values() for key in card))
    lines = ["| | " + " | ".join(_cell(label) for label in cards) + " |", "|---" * (len(cards) + 1) + "|"]
    for key in fields:
        lines.append(f"| {key} | " + " | ".join(_cell(card.get(key, "-")) for card in cards.values()) + " |")
    return lines


def record_scoring(out_dir: str | Path, pred_path, scores: SampleScores, metrics: dict | None = None) -> dict:
    """What every scorer calls once, before it writes ``metrics.json``: the per-sample statistics
    (``sample_scores.json.gz``) and the protocol card (``protocol.md``) into ``out_dir``. Returns the card."""
    out_dir = Path(out_dir)
    scores.scoring.update(scoring_environment())
    scores.write(out_dir / SAMPLE_SCORES_FILE)
    card = protocol_card(read_run_record(pred_path), scores.scoring, scores.benchmark, metrics)
    with atomic_path(out_dir / PROTOCOL_FILE) as tmp:
        tmp.write_text("\n".join(["# Protocol", "", *card_lines(card), ""]))
    return card
