"""What produced a prediction folder (run.json), and reruns that never reuse answers of another run
(docs/design.md §13): fingerprints, changed annotations, locks, --overwrite."""
# ruff: noqa: F811 - the fixtures imported from test_infer are parameters here

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from etchat.eval import runner
from etchat.eval.etbench import infer as etbench_infer
from etchat.eval.run_record import DigestCache, checkpoint_files, files_digest, read_run_record
from etchat.locking import FileLock, LockHeldError
from etchat.version import project_version
from tests.hub_cache import commit_hash, write_snapshot
from tests.test_infer import ALL_SAMPLES, GenerateSpy, bench, load, tiny_model  # noqa: F401 - fixtures

HUB_REPO = "org/etchat-tiny"


@pytest.fixture
def spy(monkeypatch, tiny_model):  # noqa: F811
    spy = GenerateSpy()
    monkeypatch.setattr(runner, "generate", spy)
    loads = []

    def load_model(args):
        loads.append(args.model_path)
        return tiny_model

    monkeypatch.setattr(runner, "load_model", load_model)
    spy.loads = loads
    return spy


def infer(bench, pred, model_path, *extra, anno=None):  # noqa: F811
    """`python -m etchat.eval.etbench.infer` in-process; returns the exit status (0 when it returned)."""
    argv = ["--anno_path", str(anno or bench / "annotations"), "--data_path", str(bench / "videos"),
            "--pred_path", str(pred), "--model_path", str(model_path), "--num_workers", "0",
            "--max_new_tokens", "4", *extra]  # fmt: skip
    try:
        runner.main(etbench_infer.ETBENCH, argv)
    except SystemExit as exit_info:
        return exit_info.code
    return 0


def error_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]


# ---- the record ------------------------------------------------------------------------------------------------------


def test_run_json_records_model_settings_version_and_environment(tiny_checkpoint, bench, tmp_path, spy):  # noqa: F811
    assert read_run_record(tmp_path / "pred") is None
    assert infer(bench, tmp_path / "pred", tiny_checkpoint, "--greedy") == 0
    record = read_run_record(tmp_path / "pred")
    assert set(record) == {"format", "benchmark", "model", "settings", "project_version", "environment", "created"}
    assert (record["format"], record["benchmark"]) == (1, "etbench")
    weights, configs, _ = checkpoint_files(tiny_checkpoint)
    assert record["model"] == {
        "name": tiny_checkpoint,
        "revision": None,
        "weights_digest": files_digest(weights, DigestCache(None)),
        "config_digest": files_digest(configs, DigestCache(None)),
    }
    # The digest is over the bytes of the weight file, computed here independently.
    import hashlib

    (weights_file,) = [path for _, path in weights]
    file_sha = "sha256:" + hashlib.sha256(weights_file.read_bytes()).hexdigest()
    expected = "sha256:" + hashlib.sha256(json.dumps([["model.safetensors", file_sha]]).encode()).hexdigest()
    assert record["model"]["weights_digest"] == expected
    settings = record["settings"]
    assert settings["decoding"] == {
        "greedy": True, "temperature": None, "top_k": None, "top_p": None, "max_new_tokens": 4,
        "repetition_penalty": None, "seed": None, "batch_size": None,
    }  # fmt: skip
    assert settings["video"] == {
        "fps": 1.0, "min_frames": None, "max_frames": None, "frame_size": 224, "vision_processor": "clip_center_224"
    }  # fmt: skip
    assert settings["prompts_digest"].startswith("sha256:") and settings["dtype"] == "float32"
    assert record["project_version"] == project_version()
    assert re.fullmatch(r"0\.1\.0(\+g[0-9a-f]{12}(\.dirty)?)?", record["project_version"])
    assert record["environment"]["device"] == "cpu" and record["environment"]["torch"] == torch.__version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", record["created"])
    # The scorer does not read run.json as predictions.
    from etchat.eval.etbench.predictions import prediction_files

    assert [p.name for p in prediction_files(tmp_path / "pred")[0]] == ["etbench.json"]
    # Every file of the folder has the mode open() gives under the umask (0644 by default), and no lock is left.
    umask = os.umask(0o022)
    os.umask(umask)
    files = [p for p in (tmp_path / "pred").rglob("*") if p.is_file()]
    assert {p.name for p in files} == {"run.json", "etbench.json", "etbench.jsonl", ".file_digests.json"}
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files if p.stat().st_mode & 0o777 != 0o666 & ~umask} == {}


def test_the_weights_digest_is_cached_by_size_and_time(tiny_checkpoint, tmp_path):
    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"a" * 64)
    cache = DigestCache(tmp_path / "cache.json")
    first = files_digest([("w", folder / "model.safetensors")], cache)
    cache.save()
    stat = os.stat(folder / "model.safetensors")
    (folder / "model.safetensors").write_bytes(b"b" * 64)  # same size, and the old time put back: trusted
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert files_digest([("w", folder / "model.safetensors")], DigestCache(tmp_path / "cache.json")) == first
    os.utime(folder / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # touched: hashed again
    assert files_digest([("w", folder / "model.safetensors")], DigestCache(tmp_path / "cache.json")) != first


# ---- reruns ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        (["--max_new_tokens", "4"], ["--max_new_tokens", "16"], "settings.decoding.max_new_tokens 4 -> 16"),
        ([], ["--greedy"], "settings.decoding.greedy false -> true"),
        (["--seed", "1"], ["--seed", "2"], "settings.decoding.seed 1 -> 2"),
        (["--dtype", "float32"], ["--dtype", "bfloat16"], 'settings.dtype "float32" -> "bfloat16"'),
    ],
)
def test_a_rerun_with_other_settings_refuses_before_loading_the_model(
    tiny_checkpoint, bench, tmp_path, spy, caplog, first, second, what
):
    pred = tmp_path / "pred"
    assert infer(bench, pred, tiny_checkpoint, *first) == 0
    before = (pred / "etbench.json").read_bytes()
    spy.loads.clear()
    caplog.clear()
    assert infer(bench, pred, tiny_checkpoint, *second) == runner.EXIT_BAD_INPUT
    assert spy.loads == [] and (pred / "etbench.json").read_bytes() == before
    (line,) = error_lines(caplog)
    assert what in line and "--overwrite" in line and "--pred_path" in line and "\n" not in line
    # --overwrite replaces the earlier answers; the folder then records the new run.
    spy.calls.clear()
    assert infer(bench, pred, tiny_checkpoint, *second, "--overwrite") == 0
    assert len(spy.queries) == len(ALL_SAMPLES)
    assert read_run_record(pred)["settings"]["decoding"]["max_new_tokens"] == (16 if "16" in second else 4)


def test_greedy_answers_do_not_depend_on_seed_or_batch_size(tiny_checkpoint, bench, tmp_path, spy):
    pred = tmp_path / "pred"
    assert infer(bench, pred, tiny_checkpoint, "--greedy", "--seed", "1") == 0
    spy.calls.clear()
    assert infer(bench, pred, tiny_checkpoint, "--greedy", "--seed", "2", "--batch_size", "3") == 0
    assert spy.calls == []  # resumed: nothing to answer


def test_a_hub_revision_that_does_not_exist_or_differs_is_refused(
    hub_cache, tiny_checkpoint, bench, tmp_path, spy, caplog
):
    write_snapshot(hub_cache, HUB_REPO, tiny_checkpoint, commit_hash("main"))
    pred = tmp_path / "pred"
    assert infer(bench, pred, HUB_REPO) == 0
    assert read_run_record(pred)["model"]["revision"] == commit_hash("main")
    before = (pred / "etbench.json").read_bytes()
    spy.loads.clear()
    caplog.clear()
    assert infer(bench, pred, HUB_REPO, "--model_revision", "v2") == runner.EXIT_BAD_INPUT
    assert "revision v2" in error_lines(caplog)[0] and spy.loads == []
    assert (pred / "etbench.json").read_bytes() == before

    # v2 exists with other weights: refused, naming the weights.
    from etchat.model.loading import load_etchat, save_etchat

    model, tokenizer = load_etchat(tiny_checkpoint)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)
    save_etchat(model, tokenizer, str(tmp_path / "v2"))
    write_snapshot(hub_cache, HUB_REPO, tmp_path / "v2", commit_hash("v2"), refs=("v2",))
    caplog.clear()
    assert infer(bench, pred, HUB_REPO, "--model_revision", "v2") == runner.EXIT_BAD_INPUT
    (line,) = error_lines(caplog)
    assert "model.weights_digest" in line and spy.loads == []


def test_a_folder_of_answers_without_run_json_is_not_resumed(tiny_checkpoint, bench, tmp_path, spy, caplog):
    pred = tmp_path / "pred"
    (pred / "journal").mkdir(parents=True)
    (pred / "journal" / "etbench.jsonl").write_text(json.dumps({**ALL_SAMPLES[0], "a": "old"}) + "\n")
    assert infer(bench, pred, tiny_checkpoint) == runner.EXIT_BAD_INPUT
    assert "without a run.json" in error_lines(caplog)[0] and spy.loads == []


def test_a_changed_question_is_answered_again_and_records_carry_current_fields(tiny_checkpoint, bench, tmp_path, spy):
    anno = tmp_path / "anno.json"
    samples = [dict(s) for s in ALL_SAMPLES]
    anno.write_text(json.dumps(samples))
    pred = tmp_path / "pred"
    assert infer(bench, pred, tiny_checkpoint, anno=anno) == 0
    samples[1]["q"] = "When does the person stand up?"  # the question changed: its answer is stale
    samples[2]["tgt"] = [[0, 1]]  # the ground truth was corrected: the answer stays, the record takes the new tgt
    anno.write_text(json.dumps(samples))
    spy.calls.clear()
    assert infer(bench, pred, tiny_checkpoint, anno=anno) == 0
    assert spy.queries == ["When does the person stand up?"]
    records = load(pred / "etbench.json")
    assert [{k: v for k, v in r.items() if k != "a"} for r in records] == samples
    assert records[1]["a"] == "answer to When does the person stand up?"
    assert "input_digest" not in records[0] and "input_digest" in (pred / "journal" / "etbench.jsonl").read_text()


def test_a_replaced_video_is_answered_again(tiny_checkpoint, bench, tmp_path, spy):
    import shutil

    from tests.video_utils import write_test_video

    videos = tmp_path / "videos"
    shutil.copytree(bench / "videos", videos)
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps(ALL_SAMPLES[1:3]))  # v1.mp4 and v2.mp4
    argv = ["--anno_path", str(anno), "--data_path", str(videos), "--pred_path", str(tmp_path / "pred"),
            "--model_path", tiny_checkpoint, "--num_workers", "0", "--max_new_tokens", "4"]  # fmt: skip
    runner.main(etbench_infer.ETBENCH, argv)
    write_test_video(videos / "v2.mp4", num_frames=6, fps=2, size=(48, 48))  # e.g. a re-encoded copy
    spy.calls.clear()
    runner.main(etbench_infer.ETBENCH, argv)
    assert spy.queries == [ALL_SAMPLES[2]["q"]]


# ---- locks -----------------------------------------------------------------------------------------------------------


def test_a_second_run_on_a_running_shard_refuses(tiny_checkpoint, bench, tmp_path, spy, caplog):
    pred = tmp_path / "pred"
    pred.mkdir()
    with FileLock(pred / ".etbench.lock", "test"):  # this (live) process holds shard 0 of 1
        assert infer(bench, pred, tiny_checkpoint) == runner.EXIT_BAD_INPUT
    (line,) = error_lines(caplog)
    assert f"shard 0 of 1 in {pred} is in use by process {os.getpid()}" in line and spy.loads == []
    # Another shard of the same run is not blocked.
    with FileLock(pred / ".etbench_1.lock", "test"):
        assert infer(bench, pred, tiny_checkpoint, "--chunk", "2", "--index", "0") == 0


def dead_process_lock(path) -> None:
    """A lock file left by a process that has ended (killed before it could remove it)."""
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    path.write_text(json.dumps({"pid": int(child.stdout), "host": socket.gethostname(), "since": "then"}))


def test_a_stale_lock_of_a_dead_process_is_taken_over(tiny_checkpoint, bench, tmp_path, spy, caplog):
    pred = tmp_path / "pred"
    pred.mkdir()
    dead_process_lock(pred / ".etbench.lock")
    assert infer(bench, pred, tiny_checkpoint) == 0
    assert "taking over the lock" in caplog.text
    assert not (pred / ".etbench.lock").exists()  # released at the end


def test_locks_of_other_hosts_are_respected_and_named(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text(json.dumps({"pid": 1, "host": "node-7", "since": "2026-01-01T00:00:00Z"}))
    with pytest.raises(LockHeldError, match=f"process 1 on node-7 .*delete {path}"):
        FileLock(path, "the thing").acquire()


def test_overwrite_refuses_while_a_shard_of_the_old_run_is_alive(tiny_checkpoint, bench, tmp_path, spy, caplog):
    pred = tmp_path / "pred"
    assert infer(bench, pred, tiny_checkpoint, "--chunk", "2", "--index", "0") == 0
    with FileLock(pred / ".etbench_1.lock", "test"):
        assert infer(bench, pred, tiny_checkpoint, "--greedy", "--overwrite") == runner.EXIT_BAD_INPUT
    assert "still running" in error_lines(caplog)[0]
    assert (pred / "etbench_0.json").exists()


def test_impossible_shard_options_are_one_line(bench, tmp_path, caplog):
    assert infer(bench, tmp_path, "unused", "--chunk", "2", "--index", "5") == runner.EXIT_BAD_INPUT
    (line,) = error_lines(caplog)
    assert "0 <= index < chunk, got index 5 and chunk 2" in line


def test_a_partial_checkpoint_digest_covers_its_base(tiny_checkpoint, tmp_path):
    from safetensors.torch import save_file

    partial = tmp_path / "partial"
    partial.mkdir()
    config = json.loads((Path(tiny_checkpoint) / "config.json").read_text())
    (partial / "config.json").write_text(json.dumps({**config, "model_name_or_path": tiny_checkpoint}))
    save_file({"model.qformer_proj.weight": torch.zeros(2, 2)}, str(partial / "pytorch_model.safetensors"))
    weights, configs, _ = checkpoint_files(partial)
    assert [label for label, _ in weights] == ["pytorch_model.safetensors", "base/model.safetensors"]
    assert [label for label, _ in configs] == ["config.json"]
