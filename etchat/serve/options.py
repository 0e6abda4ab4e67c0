"""Command-line options and error reporting shared by the chat (`etchat.serve.chat`) and the web demo
(`etchat.serve.demo`)."""

from __future__ import annotations

import argparse
import logging
import sys

from etchat.cli import add_device_args, add_model_path_arg, setup_logging
from etchat.serve.session import MAX_QUESTION_CHARS

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2


def add_session_args(parser: argparse.ArgumentParser) -> None:
    add_model_path_arg(parser)
    parser.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of video")
    parser.add_argument("--max_video_len", type=float, default=600.0, help="longest video in seconds (-1: no limit)")
    add_device_args(parser)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--temperature", type=float, default=None, help="sampling temperature (default: published 0.2)")
    parser.add_argument("--max_new_tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: random)")
    parser.add_argument(
        "--max_question_chars", type=int, default=MAX_QUESTION_CHARS, help="longer questions are refused"
    )
    parser.add_argument("--verbose", action="store_true", help="log progress (and show tracebacks of errors)")


def report_input_error(prog: str, error: Exception, verbose: bool) -> int:
    """Print `error` as one line on stderr; returns the exit status of bad input."""
    if verbose:
        logger.exception("Input error")
    message = " ".join(str(error).split())  # one line, whatever the message holds
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def setup_session_logging(verbose: bool) -> None:
    setup_logging(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar would interleave with the answer
