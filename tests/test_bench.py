"""Smoke tests of `python -m etchat.bench` at toy sizes, and checks of its helpers against hand computations.

No test asserts a time: the figures depend on the machine.
"""

import json
import math

import pytest
import torch

from etchat.bench.__main__ import main
from etchat.bench.etbench import ETBENCH_SAMPLES, etbench_frame_counts, project_minutes
from etchat.bench.infer import make_batches
from etchat.bench.measure import PeakMemory, StageTimer
from etchat.bench.models import build_tokenizer
from etchat.bench.report import append_section, format_table
from etchat.bench.train import is_stage3_trainable
from etchat.bench.workload import SampleShape, build_prompt_ids, draw_shapes
from etchat.constants import VIDEO_TOKEN_INDEX


def _common(tmp_path, output):
    return ["--video_dir", str(tmp_path / "videos"), "--video_size", "64", "--output", str(output)]


def test_infer_prints_table_and_appends_section(tmp_path, capsys):
    output = tmp_path / "benchmarks.md"
    argv = ["infer", "--samples", "3", "--batch_size", "2", "--workers", "1", "--frames", "3", "5"]
    argv += ["--prompt_tokens", "60", "70", "--answer_tokens", "2", "3", "--configs", "published,ours"]
    main(argv + _common(tmp_path, output))  # each configuration in its own subprocess, as by default

    printed = capsys.readouterr().out
    assert "| config" in printed and "samples/s" in printed and "prefill s" in printed
    rows = [line for line in printed.splitlines() if line.startswith("| published") or line.startswith("| ours")]
    assert len(rows) == 2
    assert "Target: ours >= 3x" in printed and "Projected wall time" in printed
    assert "FAILED" not in printed
    text = output.read_text()
    assert text.count("## infer: tiny geometry on cpu") == 1
    assert "Command: `python -m etchat.bench infer" in text and "| published" in text


def test_train_prints_table_and_appends_section(tmp_path, capsys):
    output = tmp_path / "benchmarks.md"
    argv = ["train", "--steps", "1", "--warmup_steps", "1", "--batch_size", "2", "--frames", "3", "4"]
    argv += [
        "--prompt_tokens",
        "60",
        "70",
        "--answer_tokens",
        "20",
        "24",
        "--configs",
        "eager,sdpa+ckpt",
        "--in_process",
    ]
    main(argv + _common(tmp_path, output))

    printed = capsys.readouterr().out
    assert "| eager " in printed and "| sdpa+ckpt " in printed and "tokens/s" in printed
    assert "FAILED" not in printed
    assert "## train: tiny geometry on cpu" in output.read_text()


def test_video_prints_table_and_appends_section(tmp_path, capsys):
    output = tmp_path / "benchmarks.md"
    argv = ["video", "--videos", "2", "--seconds", "3", "--threads", "2", "--in_process"]
    main(argv + _common(tmp_path, output))

    printed = capsys.readouterr().out
    for reader in ("decord-1", "decord-2", "pyav-1", "pyav-2", "transform", "decord-1-compressed"):
        assert f"| {reader} " in printed
    # Videos of 3 and 4 s at 3 fps read at 1 fps: 3 + 4 frames, compressed or not.
    for reader in ("decord-1", "pyav-1-compressed"):
        row = next(line for line in printed.splitlines() if line.startswith(f"| {reader} "))
        assert [cell.strip() for cell in row.split("|")[2:4]] == ["1", "7"]
        assert (row.split("|")[-2].strip() == "-") == (reader == "decord-1")  # vs original: compressed rows only
    assert len(list((tmp_path / "videos" / "compressed").glob("*.mp4"))) == 2
    assert "## video: tiny geometry on cpu" in output.read_text()


def test_sections_are_appended_never_rewritten(tmp_path):
    output = tmp_path / "benchmarks.md"
    output.write_text("# Benchmarks\n\nsomeone else's section\n")
    append_section(str(output), "\n## mine\n")
    append_section(str(output), "\n## mine again\n")
    assert output.read_text() == "# Benchmarks\n\nsomeone else's section\n\n## mine\n\n## mine again\n"


def test_no_append_leaves_the_file_alone(tmp_path, capsys):
    output = tmp_path / "benchmarks.md"
    argv = ["video", "--videos", "1", "--seconds", "2", "--configs", "pyav-1", "--in_process", "--no_append"]
    main(argv + _common(tmp_path, output))
    assert "| pyav-1" in capsys.readouterr().out
    assert not output.exists()


def test_batches_group_samples_of_similar_length():
    shapes = [SampleShape(i, frames, 100, 10, []) for i, frames in enumerate([300, 30, 200, 40, 250])]
    assert make_batches(shapes, 2, sort_by_length=False) == [[0, 1], [2, 3], [4]]
    assert make_batches(shapes, 2, sort_by_length=True) == [[1, 3], [2, 4], [0]]


def test_draws_stay_in_range_and_repeat_with_the_seed():
    shapes = draw_shapes(50, (30, 300), (100, 200), (20, 60), seed=3)
    assert all(
        30 <= s.num_frames <= 300 and 100 <= s.prompt_tokens <= 200 and 20 <= s.answer_tokens <= 60 for s in shapes
    )
    assert all(len(s.src) in (0, 2) and all(0 <= t < s.num_frames for t in s.src) for s in shapes)
    assert [s.to_dict() for s in shapes] == [s.to_dict() for s in draw_shapes(50, (30, 300), (100, 200), (20, 60), 3)]


def test_prompt_has_one_placeholder_a_vid_per_src_time_and_about_the_drawn_length():
    tokenizer = build_tokenizer()
    match_id = tokenizer.convert_tokens_to_ids("<vid>")
    for shape in (SampleShape(0, 50, 150, 20, [3.0, 9.0]), SampleShape(1, 50, 120, 20, [])):
        input_ids, question = build_prompt_ids(shape, tokenizer)
        assert int((input_ids == VIDEO_TOKEN_INDEX).sum()) == 1
        assert int((input_ids == match_id).sum()) == len(shape.src)
        # Whole words are added, so the length lands within a word's tokens of the target.
        assert abs(input_ids.numel() - shape.prompt_tokens) <= 8


def test_projection_is_linear_in_the_measured_unit_costs():
    # 10 samples, 100 frames, 50 prompt tokens: 1 s per frame-stage frame, 0.5 s per prefill token, 2 s per sample.
    result = {
        "samples": 10,
        "frames": 100,
        "prompt_tokens": 50,
        "stages": {
            "decode": 40.0,
            "vision": 40.0,
            "compressor": 20.0,
            "prefill": 75.0,
            "generation": 15.0,
            "other": 5.0,
        },
    }
    # 20 samples with 300 frames: 20 * 2 + 300 * 1 + (300 + 20 * 5) * 0.5 = 540 s = 9 min.
    assert project_minutes(result, 20, 300) == pytest.approx(9.0)


def test_etbench_frame_counts(tmp_path):
    num_samples, total_frames, _ = etbench_frame_counts()
    assert num_samples == ETBENCH_SAMPLES and total_frames == round(251.4 * 3600)
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps([{"idx": 0, "duration": 35.0}, {"idx": 1, "duration": 150.333}]))
    assert etbench_frame_counts(str(anno))[:2] == (2, 35 + 151)
    anno.write_text(json.dumps([{"idx": 7}]))
    with pytest.raises(ValueError, match="idx 7"):
        etbench_frame_counts(str(anno))


def test_stage3_trainables():
    assert is_stage3_trainable("model.layers.0.self_attn.qkv_proj.lora_A.default.weight")
    assert is_stage3_trainable("model.qformer_bert.bert.encoder.layer.0.attention.attention.query.weight")
    assert is_stage3_trainable("model.qformer_bert.bert.encoder.layer.0.crossattention.output.dense.weight")
    assert not is_stage3_trainable("model.qformer_bert.bert.encoder.layer.0.intermediate_query.dense.weight")
    assert is_stage3_trainable("model.qformer_v_proj.1.weight") and is_stage3_trainable("frm_head.1.weight")
    assert is_stage3_trainable("model.embed_tokens.weight") and is_stage3_trainable("lm_head.weight")
    assert not is_stage3_trainable("model.layers.0.self_attn.qkv_proj.weight")
    assert not is_stage3_trainable("model.layers.0.mlp.gate_up_proj.weight")


def test_timer_and_peak_memory():
    timer = StageTimer("cpu")
    with timer.stage("a"):
        with timer.stage("b"):
            pass
    assert timer.seconds["a"] >= timer.seconds["b"] >= 0
    memory = PeakMemory("cpu")
    memory.reset()
    block = torch.ones(64 * 1024 * 1024 // 4)  # 64 MiB, touched
    reading = memory.read()
    del block
    if reading["peak_reset"]:
        assert reading["peak_mib"] - reading["start_mib"] >= 60
    assert reading["peak_mib"] >= reading["start_mib"]


def test_format_table():
    table = format_table(["a", "bb"], [{"a": 1.234, "bb": "x"}, {"a": 123.4}])
    assert table.splitlines() == ["| a    | bb |", "|------|----|", "| 1.23 | x  |", "| 123  | -  |"]
    assert not math.isnan(0.0)


def test_proposed_encoding_gives_the_frame_tokens_of_encode_videos():
    from etchat.bench.models import build_model
    from etchat.bench.proposals import encode_videos_per_video

    model, _ = build_model("tiny", "sdpa", "float32", "cpu")
    generator = torch.Generator().manual_seed(0)
    videos = [torch.randn(frames, 3, 224, 224, generator=generator) for frames in (5, 11)]
    queries = ["short question", "a much longer question about when the red circle appears in the video"]
    expected = model.encode_videos(videos, queries, vision_chunk_size=4)
    # Chunks of 4 split both videos unevenly; each video's instruction is padded to itself only.
    actual = encode_videos_per_video(model, videos, queries, vision_chunk_size=4)
    assert [a.shape for a in actual] == [(5, 64), (11, 64)]
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(3, 224, 298), (2, 240, 320), (2, 300, 224)])
def test_published_transform_replays_the_projects_values(shape):
    # The baseline's transform costs what the published one does; its values are the project's transform's.
    from etchat.bench.published import published_transform
    from etchat.data.transforms import build_transform

    frames = torch.randint(0, 256, (*shape, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ours = build_transform("clip_center_224", inference=True)(frames)
    assert published_transform(frames).shape == ours.shape == (shape[0], 3, 224, 224)
    torch.testing.assert_close(published_transform(frames), ours, rtol=0, atol=1e-5)


RELEASE_LETTER_RULE = """
def rvq_eval(samples, options):
    hit = 0
    for answer, right in samples:
        if answer in options and answer == right:
            hit += 1
            continue
        hit += 10  # stands for the similarity fall-back
    return hit


if __name__ == '__main__':
    pass
"""


def _rvq_eval(source: str, local_variant: bool):
    import ast

    from etchat.bench.official_scoring import make_wrong_letter_final, split_main

    tree = ast.parse(source)
    rewritten = make_wrong_letter_final(tree) if local_variant else 0
    body, _ = split_main(tree, "script.py")
    namespace = {}
    exec(body, namespace)
    return rewritten, namespace["rvq_eval"]


def test_official_scoring_local_variant_makes_a_wrong_letter_final():
    samples, options = [("a", "a"), ("b", "a"), ("x", "a")], ("a", "b")
    # The release's rule: right letter 1; the wrong letter and the unknown one both fall back (10 each).
    assert _rvq_eval(RELEASE_LETTER_RULE, local_variant=False)[1](samples, options) == 21
    # The local variant: the known but wrong letter ends the search with no hit.
    rewritten, rvq_eval = _rvq_eval(RELEASE_LETTER_RULE, local_variant=True)
    assert (rewritten, rvq_eval(samples, options)) == (1, 11)
    # A script without the release's letter check is refused rather than run unchanged under the variant's name.
    already_final = RELEASE_LETTER_RULE.replace(
        "if answer in options and answer == right:\n            hit += 1\n            continue",
        "if answer in options:\n            if answer == right:\n                hit += 1\n            continue",
    )
    assert already_final != RELEASE_LETTER_RULE
    with pytest.raises(ValueError, match="no `if letter known and right"):
        _rvq_eval(already_final, local_variant=True)


def test_scoring_comparison_counts_equal_values_and_ignores_non_score_keys():
    from etchat.bench.scoring import compare

    release = {"rar": {"star": {"Total": 4, "Acc": 0.5}}, "dvc": {"youcook2": {"SentSim": 0.31, "F1": 0.2}}}
    project = {
        "rar": {"star": {"Total": 4, "Acc": 0.5}},
        "dvc": {"youcook2": {"SentSim": 0.3102, "F1": 0.2}},
        "input_report": {"samples": 8, "duplicates": 0},  # a run report beside the scores is not a score
    }
    result = compare(release, project)
    assert (result["values"], result["equal"], result["missing"]) == (4, 3, [])
    assert result["max_difference"] == pytest.approx(2e-4) and result["where"] == ("dvc", "youcook2", "SentSim")
    assert compare(project, release)["values"] == 4  # the report's counts are not compared either way
    del project["rar"]
    assert compare(release, project)["missing"] == [("rar", "star", "Acc"), ("rar", "star", "Total")]


def test_scoring_measure_sees_the_memory_of_a_child_process(tmp_path):
    import sys

    from etchat.bench.scoring import measure

    # The child holds 200 MiB of written (so resident) bytes for a while; its parent holds little.
    child = "import time; x = b'1' * (200 * 2**20); time.sleep(2)"
    parent = f"import subprocess, sys; subprocess.run([sys.executable, '-c', {child!r}], check=True)"
    result = measure([sys.executable, "-c", parent], tmp_path / "log.txt")
    assert result["returncode"] == 0
    assert result["process_peak_mib"] >= 200 and result["tree_peak_mib"] >= 200
    assert result["wall_s"] >= 2 and result["cpu_s"] > 0


def test_phase_clock_charges_nested_time_to_the_innermost_phase(monkeypatch):
    from etchat.bench import scoring_phases

    now = {"wall": 0.0, "cpu": 0.0}
    monkeypatch.setattr(scoring_phases.time, "perf_counter", lambda: now["wall"])
    monkeypatch.setattr(scoring_phases.time, "process_time", lambda: now["cpu"])

    def spend(wall, cpu):
        now["wall"] += wall
        now["cpu"] += cpu

    clock = scoring_phases.PhaseClock()
    inner = clock.wrap("inner", lambda: spend(3, 1))
    with clock.phase("outer"):
        spend(2, 2)
        inner()
        inner()
        spend(1, 1)
    assert dict(clock.seconds) == {"outer": 3, "inner": 6}
    assert dict(clock.cpu_seconds) == {"outer": 3, "inner": 2}
    assert dict(clock.inclusive) == {"outer": 9, "inner": 6}
    assert dict(clock.calls) == {"outer": 1, "inner": 2}
