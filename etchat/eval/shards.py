"""Whether every shard of a sharded inference run is written, so that it can be scored (docs/design.md §8).

On several nodes each node runs its own shards; the node that finishes the set scores it. A shard counts as written
when its final file holds exactly the samples the shard takes from the current annotations, in order: a file left by
an earlier run over other annotations, or a shard still running, does not count.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from etchat.eval.results import shard, shard_name
from etchat.io import read_records

logger = logging.getLogger(__name__)


def unfinished_shards(
    pred_path: str | os.PathLike, stem: str, chunk: int, keys: list[str], key_fn: Callable[[dict], str]
) -> list[int]:
    """Indices of the shards whose final file is missing or does not hold shard ``i``'s samples of ``keys``."""
    unfinished = []
    for index in range(chunk):
        path = Path(pred_path) / f"{shard_name(stem, chunk, index)}.json"
        try:
            written = [key_fn(record) for record in read_records(path)]
        except (OSError, ValueError, KeyError):
            written = None
        if written != shard(keys, chunk, index):
            unfinished.append(index)
    return unfinished


def report_unfinished(pred_path, stem: str, chunk: int, keys: list[str], key_fn) -> int:
    """Exit status of ``--check_complete``: 0 when all ``chunk`` shards are written, else 1 with the missing ones."""
    unfinished = unfinished_shards(pred_path, stem, chunk, keys, key_fn)
    if unfinished:
        logger.info("%d of %d shards not finished yet: %s", len(unfinished), chunk, unfinished)
        return 1
    logger.info("all %d shards of %s are written", chunk, pred_path)
    return 0
