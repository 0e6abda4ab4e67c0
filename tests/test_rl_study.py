"""The toy-world stage-4 study's summaries (`python -m etchat.toy.rl_study`, docs/benchmarks.md "Stage 4 on the toy
world"): the table gives each model's mean over seeds with every seed's value, and the curve table averages stage 4's
logged values over blocks of steps. The study itself takes hours on a CPU; its result is in docs/benchmarks.md, and
`tests/test_grpo.py` has the slow test that stage 4 raises the reward of the prompts it trains on."""

from etchat.toy.rl_study import ROWS, curve_table, table


def result(seed: int, tvg: float, log: list[dict]) -> dict:
    scores = {f"{task} {metric}": tvg for task, metric in ROWS}
    return {
        "seed": seed,
        "scores": {"stage 3 (start)": scores, "stage 4": {**scores, "tvg mIoU": tvg + 1}},
        "cpu_seconds": {"stage 3 (start)": 100.0, "stage 4": 30.0 + seed},
        "stage4_log": log,
    }


def test_table_gives_the_mean_over_seeds_and_each_seed():
    text = table([result(0, 50.0, []), result(1, 55.0, [])], test_videos=60).splitlines()
    assert text[0] == "| test split (60 unseen videos) | stage 3 (start) | stage 4 |"
    assert text[2] == "| TVG mIoU | 52.5 (50.0 / 55.0) | 53.5 (51.0 / 56.0) |"
    assert text[-1] == "| training CPU seconds (mean) | 100 | 30 |"


def test_curve_table_averages_blocks_of_steps():
    log = [
        {"step": s, "reward": s / 10, "reward_time": 0.5, "reward_format": 1.0, "skipped_groups": 0.0}
        for s in (1, 2, 3)
    ]
    log[1]["kl"], log[2]["kl"] = 0.1, 0.3
    lines = curve_table([result(2, 50.0, log)], block=2).splitlines()
    assert lines[0] == "| seed | steps | reward | reward_time | reward_format | kl | skipped_groups |"
    assert lines[2] == "| 2 | 1-2 | 0.150 | 0.500 | 1.000 | 0.100 | 0.000 |"
    assert lines[3] == "| 2 | 3-3 | 0.300 | 0.500 | 1.000 | 0.300 | 0.000 |"
