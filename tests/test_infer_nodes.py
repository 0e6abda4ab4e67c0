"""Multi-node inference through the launchers (torchrun-style NNODES / NODE_RANK / NPROC_PER_NODE), and the
launchers' choice of the compressed videos."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_infer import (
    ALL_SAMPLES,
    bench,  # noqa: F401 - fixture
    load,
)

ROOT = Path(__file__).resolve().parents[1]


def launch(script: str, *args: str, root: Path = ROOT, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    environment = {
        **os.environ,
        "SKIP_SETUP": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        **env,
    }
    return subprocess.run(
        ["bash", str(root / "scripts" / script), *args], env=environment, capture_output=True, text=True, check=check
    )


def dry_run(script: str, *args: str, root: Path = ROOT, **env: str) -> list[str]:
    return launch(script, *args, root=root, DRY_RUN="1", **env).stdout.splitlines()


def shard_lines(lines: list[str]) -> dict[int, str]:
    return {int(line.split("--index ")[1].split()[0]): line for line in lines if "--index" in line}


def test_each_node_runs_its_global_shards_then_checks_for_the_others():
    lines = dry_run("inference.sh", "ckpt", NNODES="2", NODE_RANK="1", CUDA_VISIBLE_DEVICES="4,5")
    shards = shard_lines(lines)
    assert sorted(shards) == [2, 3]
    assert shards[2].startswith("env CUDA_VISIBLE_DEVICES=4 python -m etchat.eval.etbench.infer ")
    assert shards[3].startswith("env CUDA_VISIBLE_DEVICES=5 ")
    assert all("--chunk 4 " in line and "--device cuda" in line for line in shards.values())
    (check,) = [line for line in lines if "--check_complete" in line]
    assert "--chunk 4 " in check and "--pred_path ckpt/etbench " in check and "--index" not in check
    assert lines[-1].strip() == "python -m etchat.eval.etbench ckpt/etbench --once"  # one node scores (§13)

    # More processes than GPUs share them round-robin; on CPUs each node runs NPROC_PER_NODE processes.
    shards = shard_lines(
        dry_run("inference.sh", NNODES="2", NODE_RANK="0", NPROC_PER_NODE="3", CUDA_VISIBLE_DEVICES="0,1")
    )
    assert [shards[i].split()[1] for i in range(3)] == [
        "CUDA_VISIBLE_DEVICES=0",
        "CUDA_VISIBLE_DEVICES=1",
        "CUDA_VISIBLE_DEVICES=0",
    ]
    shards = shard_lines(dry_run("inference_charades.sh", NNODES="3", NODE_RANK="2", CUDA_VISIBLE_DEVICES=""))
    assert list(shards) == [2] and shards[2].startswith("python -m etchat.eval.charades.infer ")
    assert "--chunk 3 " in shards[2] and "--device cpu" in shards[2]

    result = launch("inference.sh", NNODES="2", NODE_RANK="2", CUDA_VISIBLE_DEVICES="", DRY_RUN="1", check=False)
    assert result.returncode != 0 and "0 <= NODE_RANK < NNODES" in result.stderr


def test_launchers_read_videos_compressed_when_it_exists(tmp_path):
    shutil.copytree(ROOT / "scripts", tmp_path / "scripts")
    env = {"CUDA_VISIBLE_DEVICES": "", "NPROC_PER_NODE": "1", "DTYPE": "float32"}
    assert "--data_path data/etbench/videos " in dry_run("inference.sh", root=tmp_path, **env)[0]
    assert "--video_path data/et_instruct_164k/videos " in dry_run("train_stage_3.sh", root=tmp_path, **env)[0]
    for folder in ("data/etbench/videos_compressed", "data/et_instruct_164k/videos_compressed"):
        (tmp_path / folder).mkdir(parents=True)
    assert "--data_path data/etbench/videos_compressed " in dry_run("inference.sh", root=tmp_path, **env)[0]
    line = dry_run("train_stage_3.sh", root=tmp_path, **env)[0]
    assert "--video_path data/et_instruct_164k/videos_compressed " in line
    assert "--data_path /my/videos " in dry_run("inference.sh", root=tmp_path, VIDEO_PATH="/my/videos", **env)[0]


@pytest.mark.slow
def test_two_cpu_nodes_resume_score_once_complete_and_match_one_process(tiny_checkpoint, bench, tmp_path):  # noqa: F811
    env = {
        "CUDA_VISIBLE_DEVICES": "",
        "ANNO_PATH": str(bench / "annotations"),
        "VIDEO_PATH": str(bench / "videos"),
        "OMP_NUM_THREADS": "1",
    }
    args = (tiny_checkpoint, "--greedy", "--max_new_tokens", "8", "--num_workers", "0")
    nodes = {"PRED_PATH": str(tmp_path / "nodes"), "NNODES": "2", **env}

    first = launch("inference.sh", *args, NODE_RANK="0", **nodes)
    assert "other nodes' shards are not finished" in first.stderr
    assert not (tmp_path / "nodes" / "metrics.json").exists()  # shard 1 is missing: no score yet
    launch("inference.sh", *args, NODE_RANK="1", **nodes)
    assert (tmp_path / "nodes" / "metrics.json").exists()  # the node that completed the set scored it
    (tmp_path / "nodes" / "metrics.json").unlink()
    rerun = launch("inference.sh", *args, NODE_RANK="0", **nodes)  # resumes: nothing left to answer, then scores
    assert "3 samples in this shard, 0 to answer" in rerun.stderr
    assert (tmp_path / "nodes" / "metrics.json").exists()

    launch("inference.sh", *args, PRED_PATH=str(tmp_path / "one"), **env)
    merged = load(tmp_path / "nodes" / "etbench_0.json") + load(tmp_path / "nodes" / "etbench_1.json")
    single = load(tmp_path / "one" / "etbench.json")
    assert len(merged) == len(single) == len(ALL_SAMPLES)
    answers = {(r["task"], r["idx"]): r["a"] for r in single}
    assert {(r["task"], r["idx"]): r["a"] for r in merged} == answers
    assert all(answers.values())
    assert load(tmp_path / "nodes" / "metrics.json") == load(tmp_path / "one" / "metrics.json")
