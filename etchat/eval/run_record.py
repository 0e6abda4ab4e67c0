"""What produced a prediction folder: ``<pred_path>/run.json`` (the layout is fixed by the project's contracts:
``format``, ``benchmark``, ``model`` {name, revision, weights_digest}, ``settings`` {decoding, video,
prompts_digest, dtype}, ``project_version``, ``environment``, ``created``)."""

from __future__ import annotations

import json
import os
from pathlib import Path

RUN_FILE = "run.json"


def read_run_record(pred_path: str | os.PathLike) -> dict | None:
    """The run record of a prediction folder (or of the folder of a prediction file); None when it has none."""
    pred_path = Path(pred_path)
    folder = pred_path if pred_path.is_dir() or not pred_path.suffix else pred_path.parent
    path = folder / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: unreadable run record ({error})") from error
    if not isinstance(record, dict):
        raise ValueError(f"{path}: the run record is not a JSON object")
    return record
