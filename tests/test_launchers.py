"""The training launchers' arithmetic and rendezvous (scripts/common.sh): the published batch flags in EXTRA_ARGS
are honoured and the real global batch is printed; a single-node run takes a free port when 29500 is taken."""

import os
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def dry_run(stage: int, **env: str) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k not in ("MASTER_PORT", "NNODES", "NODE_RANK", "EXTRA_ARGS")}
    environment = {**inherited, "SKIP_SETUP": "1", "DRY_RUN": "1", "DTYPE": "float32", **env}
    environment["PATH"] = os.path.dirname(sys.executable) + os.pathsep + environment["PATH"]
    script = ROOT / "scripts" / f"train_stage_{stage}.sh"
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=environment)


def option(argv: list[str], flag: str) -> str:
    return argv[len(argv) - 1 - argv[::-1].index(flag) + 1]  # the last occurrence wins, as in argparse


def global_batch(argv: list[str]) -> int:
    train = argv[argv.index("etchat.train.train") + 1 :]
    nproc, nnodes = int(option(argv, "--nproc_per_node")), int(option(argv, "--nnodes"))
    per_device = int(option(train, "--per_device_train_batch_size"))
    return nproc * nnodes * per_device * int(option(train, "--gradient_accumulation_steps"))


@pytest.mark.parametrize(
    ("extra", "expected", "printed"),
    [
        ("--per_device_train_batch_size 2", 32, "2 per device, accumulation 2 -> global batch 32, float32"),
        ("--per_device_train_batch_size=4 --max_steps 5", 32, "4 per device, accumulation 1 -> global batch 32"),
        (
            "--per_device_train_batch_size 2 --gradient_accumulation_steps 4",
            64,
            "accumulation 4 -> global batch 64 (not the stage's 32)",
        ),
    ],
)
def test_published_batch_flags_in_extra_args_enter_the_arithmetic(extra, expected, printed):
    result = dry_run(3, NPROC_PER_NODE="8", EXTRA_ARGS=extra, MASTER_PORT="29777")
    assert result.returncode == 0, result.stderr
    argv = shlex.split(result.stdout)
    assert global_batch(argv) == expected
    assert printed in result.stderr


def test_a_per_device_batch_that_cannot_give_the_global_batch_is_refused_in_one_line():
    result = dry_run(3, NPROC_PER_NODE="8", EXTRA_ARGS="--per_device_train_batch_size 3", MASTER_PORT="29777")
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [
        "GLOBAL_BATCH=32 is not a multiple of processes (8) x per-device batch (3): set GLOBAL_BATCH, or "
        "--gradient_accumulation_steps in EXTRA_ARGS"
    ]


def test_a_single_node_run_takes_a_free_port_when_29500_is_taken():
    holder = socket.socket()
    try:
        holder.bind(("", 29500))
        holder.listen()
    except OSError:
        pass  # something else holds it: the same situation
    try:
        result = dry_run(1, NPROC_PER_NODE="2")
        assert result.returncode == 0, result.stderr
        port = int(option(shlex.split(result.stdout), "--master_port"))
        assert port != 29500
        with socket.socket() as probe:
            probe.bind(("", port))  # free
    finally:
        holder.close()
    # Several nodes must agree on the port: there it stays MASTER_PORT or 29500.
    argv = shlex.split(dry_run(1, NPROC_PER_NODE="2", NNODES="2", NODE_RANK="1").stdout)
    assert option(argv, "--master_port") == "29500"
