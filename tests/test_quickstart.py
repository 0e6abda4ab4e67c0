"""The README's main job end to end: `bash scripts/quickstart.sh` trains a tiny E.T. Chat through the three stage
scripts on synthetic videos and scores it; the trained model must ground events far better than the untrained model
and random spans (about 20 minutes on a 2-core CPU)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def tvg_scores(folder: Path) -> tuple[float, float]:
    """(F1, mIoU) in percent of the synthetic grounding task, from compute_metrics.py's metrics.json."""
    scores = json.loads((folder / "metrics.json").read_text())["tvg"]["synthetic"]
    return 100 * scores["F1"], 100 * scores["mIoU"]


def test_quickstart_trains_a_model_that_grounds_events(tmp_path):
    qs_dir = tmp_path / "quickstart"
    env = {**os.environ, "QS_DIR": str(qs_dir)}
    result = subprocess.run(
        ["bash", "scripts/quickstart.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=3600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    trained = tvg_scores(qs_dir / "stage-3" / "etbench")
    untrained = tvg_scores(qs_dir / "untrained" / "etbench")
    random_spans = tvg_scores(qs_dir / "random" / "etbench")
    print(f"TVG F1 / mIoU: trained {trained}, untrained {untrained}, random {random_spans}")
    assert trained[0] >= 50
    for baseline in (untrained, random_spans):
        assert trained[0] >= baseline[0] + 20 and trained[1] >= baseline[1] + 20
    assert any((qs_dir / "stage-3" / "etbench" / "plots").glob("*.png"))
    assert "tvg F1" in result.stdout  # the summary table is printed

    # A rerun finds every step done and only prints the summary again.
    rerun = subprocess.run(
        ["bash", "scripts/quickstart.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "train_runtime" not in rerun.stdout + rerun.stderr
    assert tvg_scores(qs_dir / "stage-3" / "etbench") == trained
