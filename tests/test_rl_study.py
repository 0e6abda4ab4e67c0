"""Stage 4 learns: a shortened toy-world study (`python -m etchat.toy.rl_study`, one seed, a smaller world, no "more
stage 3" branch) trains a tiny E.T. Chat through stages 1-3 and then stage 4 with the launchers, and stage 4 must raise
TVG mIoU on the unseen test split over its stage-3 start without lowering the other grounding rows by much. The full
comparison with more stage-3 training, over three seeds, is in docs/benchmarks.md."""

import json

import pytest

from etchat.toy.rl_study import main

pytestmark = pytest.mark.slow

SHORT = [
    "--seeds", "0", "--train_videos", "120", "--test_videos", "30", "--images", "60", "--stage3_tasks", "tvg,tal,vhd",
    "--stage3_epochs", "2", "--stage4_steps", "30", "--more_stage3_steps", "0",
]  # fmt: skip
MIN_TVG_GAIN = 3.0  # mIoU points
MAX_OTHER_DROP = 5.0  # F1 points, TAL and VHD


def test_stage4_raises_tvg_miou_over_its_stage3_start(tmp_path):
    (result,) = main(["--out", str(tmp_path / "study"), *SHORT])
    start, stage4 = result["scores"]["stage 3 (start)"], result["scores"]["stage 4"]
    print(json.dumps(result["scores"]))
    assert stage4["tvg mIoU"] >= start["tvg mIoU"] + MIN_TVG_GAIN
    for row in ("tal F1", "vhd F1"):
        assert stage4[row] >= start[row] - MAX_OTHER_DROP, row
    steps = [entry for entry in result["stage4_log"] if "reward" in entry]
    assert len(steps) == 30 and all("kl" in entry and "skipped_groups" in entry for entry in steps[1:])
    assert (tmp_path / "study" / "reward_curves.png").is_file()
