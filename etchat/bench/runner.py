"""Run one benchmark configuration in a fresh Python process, so its peak memory and thread state are its own.

`run_isolated("etchat.bench.infer:run_config", config)` starts `python -m etchat.bench.runner`, which imports the
function, calls it with the config dict and writes its result dict as JSON.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import subprocess
import sys
import tempfile

from etchat.cli import setup_logging

logger = logging.getLogger(__name__)


class ConfigFailed(RuntimeError):
    """A configuration's subprocess exited with an error (the message holds the end of its output)."""


def run_isolated(target: str, config: dict, timeout: float | None = None) -> dict:
    with tempfile.TemporaryDirectory(prefix="etchat-bench-") as tmp:
        config_path, result_path = os.path.join(tmp, "config.json"), os.path.join(tmp, "result.json")
        with open(config_path, "w") as f:
            json.dump(config, f)
        command = [sys.executable, "-m", "etchat.bench.runner", target, config_path, result_path]
        try:
            completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise ConfigFailed(f"{config.get('name', target)}: timed out after {timeout} s") from e
        if completed.returncode != 0 or not os.path.exists(result_path):
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-8:]
            raise ConfigFailed(f"{config.get('name', target)}: exit code {completed.returncode}: " + " | ".join(tail))
        with open(result_path) as f:
            return json.load(f)


def run_in_process(target: str, config: dict) -> dict:
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    return function(config)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.bench.runner",
        description="Run one benchmark configuration (used by python -m etchat.bench).",
    )
    parser.add_argument("target", help="module:function to call with the config dict")
    parser.add_argument("config", help="JSON file with the config")
    parser.add_argument("result", help="JSON file to write the result to")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging(logging.WARNING)
    with open(args.config) as f:
        config = json.load(f)
    result = run_in_process(args.target, config)
    with open(args.result, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
