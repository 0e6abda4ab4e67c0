"""Reading the run record ``run.json`` that inference writes into every prediction folder (its model, revision,
weights digest, decoding and video settings, prompt digest, project version, machine and date; the layout is fixed in
the project's interface contract and docs/design.md §8)."""

from __future__ import annotations

import json
from pathlib import Path

from etchat.io import RUN_FILE


def read_run_record(pred_path) -> dict | None:
    """The run record of a prediction folder (or of the folder of a prediction file); None when it has none. A
    record that is not a JSON object is an error naming the file."""
    path = Path(pred_path)
    record_file = (path if path.is_dir() else path.parent) / RUN_FILE
    if not record_file.is_file():
        return None
    try:
        record = json.loads(record_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{record_file}: not valid JSON ({error})") from error
    if not isinstance(record, dict):
        raise ValueError(f"{record_file}: expected a JSON object, got {type(record).__name__}")
    return record
