"""Real multi-process training runs: `torchrun --nproc_per_node 2` on the CPU (gloo), under DDP and DeepSpeed ZeRO-2.

Each backend trains the tiny stage-3 setup (LoRA + non-LoRA trainables + matching) for 6 steps without a break,
and again as a run stopped at its step-3 checkpoint and restarted in the same folder. The restarted run must resume
(not start over) and log the same losses as the unbroken one; both final models (one saved whole, one as adapter +
trainables) must load with `load_etchat`, hold the same weights and generate. The learning rate is constant so that
stopping through `--max_steps 3` does not change the schedule of the first half.
"""

import os
import socket
import subprocess
import sys

import pytest
import torch
from test_train import generate_once, stage1_args, stage3_args, training_losses, write_tiny_data

from etchat.model.loading import load_etchat
from etchat.train.train import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.slow

BACKENDS = {
    "ddp": ["--group_by_modality", "True"],
    "zero2": ["--deepspeed", os.path.join(ROOT, "scripts", "zero2.json")],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(argv: list[str]) -> str:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONPATH=ROOT)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    command += ["--master_port", str(free_port()), "-m", "etchat.train.train", *argv]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    return output


@pytest.fixture(scope="module")
def setup(tiny_base, tmp_path_factory):
    data = write_tiny_data(str(tmp_path_factory.mktemp("dist_data")))
    stage1 = str(tmp_path_factory.mktemp("dist_stage1"))
    train(stage1_args(tiny_base, data, stage1))
    return data, stage1


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_two_process_training_saves_loads_and_resumes(backend, setup, tmp_path):
    data, stage1 = setup
    extra = BACKENDS[backend] + ["--report_to", "none"]
    unbroken, restarted = str(tmp_path / "unbroken"), str(tmp_path / "restarted")

    output = torchrun(stage3_args(stage1, data, unbroken, max_steps=6, save_full_model=True) + extra)
    expected_type = "DEEPSPEED" if backend == "zero2" else "MULTI_CPU"
    assert f"DistributedType.{expected_type}, 2 process(es)" in output

    torchrun(stage3_args(stage1, data, restarted, max_steps=3, save_full_model=False) + extra)
    assert os.path.isdir(os.path.join(restarted, "checkpoint-3"))
    output = torchrun(stage3_args(stage1, data, restarted, max_steps=6, save_full_model=False) + extra)
    assert "Resuming from " + os.path.join(restarted, "checkpoint-3") in output

    expected, resumed = training_losses(unbroken), training_losses(restarted)
    assert sorted(expected) == sorted(resumed) == [1, 2, 3, 4, 5, 6]
    for step in expected:
        for key in ("loss", "lm_loss", "match_loss", "grad_norm"):
            assert resumed[step][key] == pytest.approx(expected[step][key], rel=1e-4, abs=1e-6), (step, key)
    assert expected[6]["lm_loss"] < expected[1]["lm_loss"]  # it trained

    # The full save (LoRA merged) and the adapter save describe the same model.
    full, _ = load_etchat(unbroken)
    partial, _ = load_etchat(restarted)
    partial_weights = partial.state_dict()
    for key, value in full.state_dict().items():
        torch.testing.assert_close(partial_weights[key], value, rtol=1e-4, atol=1e-5, msg=key)
    for path in (unbroken, restarted):
        assert len(generate_once(path).token_ids) > 0
