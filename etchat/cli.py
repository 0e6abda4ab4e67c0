"""The command-line vocabulary every command shares: model path, device, dtype, logging.

Flag names follow the published scripts where they have them (`--model_path`, `--anno_path`, `--data_path`,
`--pred_path`; training's `--model_name_or_path`), else transformers' (`--model_revision`), snake_case everywhere,
and one set of dtype names: torch's own (`float32`, `float16`, `bfloat16`). docs/design.md lists the whole
vocabulary.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import TextIO

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MESSAGE_FORMAT = "%(message)s"  # commands whose log is their report (the scorers, the results report)


def shard_log_format(index: int, chunk: int) -> str:
    """LOG_FORMAT with the shard in every line, for the processes of a sharded run."""
    return f"%(asctime)s [shard {index}/{chunk}] %(levelname)s %(name)s: %(message)s"


def add_model_path_arg(parser: argparse.ArgumentParser, required: bool = True) -> None:
    parser.add_argument(
        "--model_path",
        required=required,
        help="E.T. Chat checkpoint (full, or partial on top of its base): a folder or a Hugging Face Hub repo id, "
        "e.g. PolyU-ChenLab/ETChat-Phi3-Mini-Stage-3",
    )
    parser.add_argument(
        "--model_revision", default=None, help="branch, tag or commit of a Hub --model_path (default: main)"
    )


def add_old_spelling(parser: argparse.ArgumentParser, old: str, dest: str, **kwargs) -> None:
    """Accept `old`, a former name of the flag whose value goes to `dest`, without showing it in --help (scripts
    written before the rename keep working; docs/design.md §12 lists them)."""
    parser.add_argument(old, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kwargs)


def add_device_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    parser.add_argument(
        "--dtype",
        choices=("auto", *DTYPES),
        default="auto",
        help="dtype of the weights (auto: float16 on CUDA, else float32)",
    )


def resolve_device_dtype(device: str | None, dtype: str | None = "auto") -> tuple[str, torch.dtype]:
    """Default device: cuda when available; dtype `auto` (or None): float16 on CUDA, float32 elsewhere."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dtype in (None, "auto"):
        dtype = "float16" if torch.device(device).type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}, expected one of {', '.join(DTYPES)}")
    return device, DTYPES[dtype]


class _ConsoleHandler(logging.StreamHandler):
    """A handler on the process's *current* sys.stderr (or sys.stdout): resolved at every record, so a set-up made
    while the stream was replaced (pytest's capture, a notebook's redirect) never writes to a closed stream later."""

    def __init__(self, stream_name: str):
        self._stream_name = stream_name
        super().__init__()

    @property
    def stream(self) -> TextIO:
        return getattr(sys, self._stream_name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns one; the current one is always used
        pass


def setup_logging(
    level: int = logging.INFO, *, fmt: str = LOG_FORMAT, stream: TextIO | None = None, force: bool = False
) -> None:
    """The logging set-up of every command: the root logger at `level`, lines in `fmt` (time, level, logger, message)
    on stderr, or on `stream` (the scorers log to stdout: their log is their report). Without `force` an existing
    set-up (an embedding program's, pytest's) is kept; `force` replaces it (training: libraries imported before it
    may have configured the root logger). sys.stderr and sys.stdout are looked up at each record, not kept."""
    if stream is None or stream is sys.stderr:
        handler = _ConsoleHandler("stderr")
    elif stream is sys.stdout:
        handler = _ConsoleHandler("stdout")
    else:
        handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler], force=force)
