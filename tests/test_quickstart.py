"""The README's main job end to end: `bash scripts/quickstart.sh` trains a tiny E.T. Chat through the three stage
scripts on synthetic videos and scores it on E.T. Bench, QVHighlights and dense-captioning versions of its test split;
the trained model must ground events far better than the untrained model and random spans, and beat both on the
other two benchmarks (about 30 minutes on a 2-core CPU)."""

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


def headline_scores(run: Path) -> dict[str, float]:
    """QVHighlights MR-full-mAP and HL-min-VeryGood-mAP, dense-captioning F1 and SODA_c, in percent."""
    brief = json.loads((run / "qvhighlights" / "metrics.json").read_text())["brief"]
    dvc = json.loads((run / "dvc" / "metrics.json").read_text())
    return {
        "MR-full-mAP": brief["MR-full-mAP"],
        "HL-min-VeryGood-mAP": brief["HL-min-VeryGood-mAP"],
        "densecap F1": 100 * dvc["F1"],
        "densecap SODA_c": 100 * dvc["SODA_c"],
    }


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

    trained = headline_scores(qs_dir / "stage-3")
    for name in ("untrained", "random"):
        baseline = headline_scores(qs_dir / name)
        print(f"{name}: {baseline}; trained: {trained}")
        assert all(trained[key] > baseline[key] for key in trained), (name, baseline, trained)

    # A rerun finds every step done and only prints the summary again.
    rerun = subprocess.run(
        ["bash", "scripts/quickstart.sh"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "train_runtime" not in rerun.stdout + rerun.stderr
    assert tvg_scores(qs_dir / "stage-3" / "etbench") == tvg
