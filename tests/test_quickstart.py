"""The README's main job end to end: `bash scripts/quickstart.sh` trains a tiny E.T. Chat through the three stage
scripts on synthetic videos and scores it on E.T. Bench, QVHighlights and dense-captioning versions of its test split;
the trained model must ground events far better than the untrained model and random spans, and beat both on the
other two benchmarks (slow: about 11 minutes on a 2-core CPU).

Its stage 3 reads the data the way the quickstart does (loader workers that keep decoded videos across steps and
epochs); two short runs of that must give the same weights bit for bit (default suite).
"""

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_train import write_tiny_data

from etchat.toy.baselines import benchmark_scores
from etchat.train.train import train

REPO = Path(__file__).resolve().parents[1]


# ---- determinism of the quickstart's stage-3 data path ---------------------------------------------------------------
def stage3_run(start: str, data: dict, output_dir: Path, num_workers: int, video_cache_size: int) -> dict:
    """Two epochs of stage 3 on the tiny videos with the quickstart's settings (all but the vision tower trains, no
    LoRA, a checkpoint in between); returns the saved weights. (The data order depends on the loader settings:
    persistent workers draw one seed fewer from the global generator per epoch.)"""
    workers = ["--dataloader_num_workers", str(num_workers)]
    if num_workers:
        workers += ["--dataloader_persistent_workers", "True"]
    train([
        "--model_name_or_path", start, "--conv_type", "phi3", "--anno_path", data["stage3"],
        "--video_path", data["media"], "--video_cache_size", str(video_cache_size), *workers,
        "--lora_enable", "False", "--tuning_mode", "llm", "--use_matching", "True", "--bi_attention", "True",
        "--output_dir", str(output_dir), "--save_full_model", "True", "--save_strategy", "steps", "--save_steps", "3",
        "--per_device_train_batch_size", "2", "--num_train_epochs", "2", "--learning_rate", "2e-3",
        "--report_to", "none", "--seed", "0", "--use_cpu", "True",
    ])  # fmt: skip
    return load_file(str(output_dir / "model.safetensors"))


def differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [name for name in a if not torch.equal(a[name], b[name])]


def test_stage3_with_loader_workers_and_video_cache_gives_the_same_weights_run_to_run(tiny_checkpoint, tmp_path):
    data = write_tiny_data(str(tmp_path / "data"))
    first = stage3_run(tiny_checkpoint, data, tmp_path / "a", num_workers=2, video_cache_size=8)
    second = stage3_run(tiny_checkpoint, data, tmp_path / "b", num_workers=2, video_cache_size=8)
    start = load_file(str(Path(tiny_checkpoint) / "model.safetensors"))
    assert differing(start, {name: first[name] for name in start}), "stage 3 trained nothing"
    assert differing(first, second) == []


# ---- the settings a quickstart's weights depend on -------------------------------------------------------------------
def quickstart(qs_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("QS_")}
    environment.update(SKIP_SETUP="1", QS_DIR=str(qs_dir), **env)
    return subprocess.run(
        ["bash", "scripts/quickstart.sh", *args], cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )


def test_quickstart_thread_count_is_its_own_not_an_inherited_omp_num_threads(tmp_path):
    # The weights depend on the torch thread count; `nproc` (the old default) returns an inherited OMP_NUM_THREADS.
    printed = quickstart(tmp_path / "qs", "--print_settings", OMP_NUM_THREADS="1")
    assert printed.returncode == 0, printed.stderr
    settings = json.loads(printed.stdout)
    assert settings["threads"] == "2" and settings["seed"] == "0"
    assert settings["cpu_kernels"] == torch.backends.cpu.get_cpu_capability()
    chosen = quickstart(tmp_path / "qs", "--print_settings", OMP_NUM_THREADS="1", QS_THREADS="3", QS_SEED="4")
    assert json.loads(chosen.stdout) == {**settings, "threads": "3", "seed": "4"}
    assert not (tmp_path / "qs").exists()


def test_quickstart_refuses_to_resume_a_folder_made_with_other_settings(tmp_path):
    qs_dir = tmp_path / "qs"
    qs_dir.mkdir()
    settings = json.loads(quickstart(qs_dir, "--print_settings").stdout)
    (qs_dir / "quickstart.json").write_text(json.dumps({**settings, "threads": "1"}, indent=1) + "\n")
    refused = quickstart(qs_dir)
    assert refused.returncode == 1
    assert "other settings" in refused.stderr and '"threads": "2"' in refused.stderr
    assert sorted(path.name for path in qs_dir.iterdir()) == ["quickstart.json"]  # nothing was started


# ---- the quickstart end to end ---------------------------------------------------------------------------------------


def tvg_scores(folder: Path) -> tuple[float, float]:
    """(F1, mIoU) in percent of the synthetic grounding task, from compute_metrics.py's metrics.json."""
    scores = json.loads((folder / "metrics.json").read_text())["tvg"]["synthetic"]
    return 100 * scores["F1"], 100 * scores["mIoU"]


# Rows of the printed table that measure grounding (all but multiple choice and caption wording), and the lead over
# the better baseline the trained model keeps on each: the smallest lead seen, 10.6 points (seed 1, QVHighlights
# MR-full-mAP; docs/benchmarks.md), less room for another machine's float sums.
CAPTION_WORDING_ROWS = ("densecap CIDEr", "densecap METEOR")
MIN_LEAD = 5.0


def grounding_rows(run: Path) -> dict[str, float]:
    scores = benchmark_scores(run)
    return {row: value for row, value in scores.items() if not row.endswith(" Acc") and row not in CAPTION_WORDING_ROWS}


@pytest.mark.slow
def test_quickstart_trains_a_model_that_grounds_events(tmp_path):
    qs_dir = tmp_path / "quickstart"
    env = {**os.environ, "QS_DIR": str(qs_dir)}
    result = subprocess.run(
        ["bash", "scripts/quickstart.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=5400
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    tvg = tvg_scores(qs_dir / "stage-3" / "etbench")
    untrained = tvg_scores(qs_dir / "untrained" / "etbench")
    random_spans = tvg_scores(qs_dir / "random" / "etbench")
    print(f"TVG F1 / mIoU: trained {tvg}, untrained {untrained}, random {random_spans}")
    assert tvg[0] >= 50
    for baseline in (untrained, random_spans):
        assert tvg[0] >= baseline[0] + 20 and tvg[1] >= baseline[1] + 20
    assert any((qs_dir / "stage-3" / "etbench" / "plots").glob("*.png"))
    assert "tvg F1" in result.stdout and "qvh MR-full-mAP" in result.stdout  # the summary table is printed

    # Every grounding row of E.T. Bench, QVHighlights and dense captioning: well ahead of both baselines.
    trained = grounding_rows(qs_dir / "stage-3")
    baselines = {name: grounding_rows(qs_dir / name) for name in ("untrained", "random")}
    assert {"tal F1", "vhd F1", "dvc F1", "qvh MR-full-mAP", "densecap SODA_c"} <= trained.keys()
    for row, value in trained.items():
        best = max(scores[row] for scores in baselines.values())
        assert value >= best + MIN_LEAD, (row, value, baselines)

    # The report of the three rows, with the protocol cards.
    report = qs_dir / "report" / "report.md"
    assert f"Report (placement among published results, 95% intervals, protocol cards, parse audit): {report}" in (
        result.stdout
    )
    assert "trained" in report.read_text() and "random" in report.read_text()

    # A rerun finds every step done and only prints the summary again.
    rerun = subprocess.run(
        ["bash", "scripts/quickstart.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "train_runtime" not in rerun.stdout + rerun.stderr
    assert tvg_scores(qs_dir / "stage-3" / "etbench") == tvg
