"""Inference's annotation checks (unusable samples skipped, --strict), timestamps as text, and the shard check that
multi-node runs score by."""

import json

import pytest

from etchat.data.etbench import load_annotations
from etchat.eval import runner
from etchat.eval.etbench import infer as etbench_infer
from etchat.eval.shards import unfinished_shards
from tests.test_infer import ALL_SAMPLES, GenerateSpy, bench, load, run_bench, tiny_model  # noqa: F401 - fixtures


@pytest.fixture
def spy(monkeypatch):
    spy = GenerateSpy()
    monkeypatch.setattr(runner, "generate", spy)
    return spy


def write(path, samples):
    path.write_text(json.dumps(samples))
    return path


BAD_SAMPLES = [
    {k: v for k, v in ALL_SAMPLES[1].items() if k != "q"} | {"idx": 10},  # no question
    dict(ALL_SAMPLES[1]),  # the same task/source/idx as an earlier sample
    dict(ALL_SAMPLES[1], idx=11, q="What happens after <vid>?"),  # a <vid> without its time in src
]


def test_unusable_samples_are_skipped_the_rest_answered_and_the_run_exits_non_zero(
    tiny_model,  # noqa: F811
    bench,  # noqa: F811
    tmp_path,
    spy,
    caplog,
):
    anno = write(tmp_path / "anno.json", ALL_SAMPLES[:3] + BAD_SAMPLES + ALL_SAMPLES[3:])
    result = run_bench(tiny_model, bench, tmp_path / "pred", anno=anno)
    assert runner.failure_line(result).startswith("3 annotation samples were skipped")
    records = load(tmp_path / "pred" / "etbench.json")
    assert [{k: v for k, v in r.items() if k != "a"} for r in records] == ALL_SAMPLES
    assert "3 of 8 E.T. Bench samples cannot be used" in caplog.text
    assert "anno.json: sample #3 lacks q" in caplog.text and "sample #4 repeats task/source/idx" in caplog.text
    assert "sample #5 has 1 <vid> tokens but len(src) = 0" in caplog.text

    spy.calls.clear()
    with pytest.raises(ValueError, match="3 of 8 E.T. Bench samples cannot be used"):
        run_bench(tiny_model, bench, tmp_path / "strict", "--strict", anno=anno)
    assert spy.calls == [] and not (tmp_path / "strict").exists()


def test_timestamps_as_text_leave_src_as_metadata(tiny_model, bench, tmp_path, spy):  # noqa: F811
    as_text = dict(ALL_SAMPLES[0], q="Which action happens at 1.0s? Options: (A) open door (B) sit down")
    anno = write(tmp_path / "txt.json", [as_text, ALL_SAMPLES[1]])
    run_bench(tiny_model, bench, tmp_path / "pred", anno=anno)
    (requests, _), (more, _) = spy.calls  # rar and tvg need different settings: two calls
    assert [r.src for r in requests + more] == [None, None]
    assert load(tmp_path / "pred" / "etbench.json")[0]["src"] == [1.0]
    # Beside a sample that uses <vid>, a sample with times but no token has lost them.
    mixed = write(tmp_path / "mixed.json", [ALL_SAMPLES[0], dict(as_text, idx=1)])
    with pytest.raises(ValueError, match=r"sample #1 has 0 <vid> tokens but len\(src\) = 1"):
        load_annotations(mixed)


def check_complete(bench, pred, chunk, anno=None):  # noqa: F811
    argv = ["--anno_path", str(anno or bench / "annotations"), "--data_path", str(bench / "videos"),
            "--pred_path", str(pred), "--model_path", "unused", "--chunk", str(chunk), "--check_complete"]  # fmt: skip
    with pytest.raises(SystemExit) as exit_info:
        runner.main(etbench_infer.ETBENCH, argv)
    return exit_info.value.code


def test_check_complete_waits_for_every_shard_of_the_current_annotations(tiny_model, bench, tmp_path, spy):  # noqa: F811
    pred = tmp_path / "pred"
    run_bench(tiny_model, bench, pred, "--chunk", "2", "--index", "1")
    assert check_complete(bench, pred, 2) == 1
    keys = [etbench_infer.sample_key(s) for s in ALL_SAMPLES]
    assert unfinished_shards(pred, "etbench", 2, keys, etbench_infer.sample_key) == [0]
    run_bench(tiny_model, bench, pred, "--chunk", "2", "--index", "0")
    assert check_complete(bench, pred, 2) == 0
    # Files of a run over other annotations do not count.
    fewer = write(tmp_path / "fewer.json", ALL_SAMPLES[:4])
    assert unfinished_shards(pred, "etbench", 2, keys[:4], etbench_infer.sample_key) == [0]  # 0 had sample 4
    assert check_complete(bench, pred, 2, anno=fewer) == 1
    # Nor does a shard file cut short.
    (pred / "etbench_0.json").write_text((pred / "etbench_0.json").read_text()[:-20])
    assert unfinished_shards(pred, "etbench", 2, keys, etbench_infer.sample_key) == [0]
