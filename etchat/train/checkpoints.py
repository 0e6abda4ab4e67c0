"""Training checkpoints a run can resume from: every file present and whole.

A crash, a full disk or a kill can leave the newest `checkpoint-<step>` half written while an older one is intact. A
checkpoint counts as loadable when its trainer state (written last by the Trainer) parses, every JSON file parses,
every safetensors file is as long as its header says, and every torch zip file (optimizer, scheduler, RNG states,
DeepSpeed shards) has its central directory, which a truncated zip loses first. These checks read headers only, so
they cost little even for checkpoints of many gigabytes.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from safetensors.torch import save_file
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from etchat.io import atomic_path, file_problem

logger = logging.getLogger(__name__)

TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINT_NAME = re.compile(rf"^{PREFIX_CHECKPOINT_DIR}-(\d+)$")


def checkpoint_problem(folder: str | os.PathLike) -> str | None:
    """Why the checkpoint in ``folder`` cannot be resumed from (naming the file), or None when it can."""
    folder = Path(folder)
    if not (folder / TRAINER_STATE_FILE).is_file():
        return f"no {TRAINER_STATE_FILE} (the save did not finish)"
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        try:
            problem = file_problem(path)
        except OSError as error:
            problem = f"unreadable ({error})"
        if problem:
            return f"{path.relative_to(folder)}: {problem}"
    return None


def find_last_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-<step>` folder of `output_dir` that can be resumed from; newer ones that cannot are
    logged with the reason and skipped."""
    if not os.path.isdir(output_dir):
        return None
    steps = {
        int(match.group(1)): os.path.join(output_dir, name)
        for name in os.listdir(output_dir)
        if (match := CHECKPOINT_NAME.match(name)) and os.path.isdir(os.path.join(output_dir, name))
    }
    for step in sorted(steps, reverse=True):
        problem = checkpoint_problem(steps[step])
        if problem is None:
            return steps[step]
        logger.warning("Skipping %s: %s", steps[step], problem)
    return None


def save_safetensors_atomic(state_dict: dict, path: str | os.PathLike) -> None:
    """`safetensors.torch.save_file` through a temporary file and a rename: the file is whole or absent."""
    with atomic_path(path) as tmp:
        save_file(state_dict, str(tmp), metadata={"format": "pt"})
