"""A bad training sample never poisons a model (docs/design.md §13, §15): the sample checks skip bad times and
repeated samples (or refuse them with --strict), a non-finite loss or gradient stops training at once naming the step
and the samples, no checkpoint with a non-finite weight is written, a damaged optimizer state is named, and saved
files get the usual mode."""
# ruff: noqa: F811 - the fixtures imported from test_train are parameters here

import json
import math
import os
import zipfile

import pytest
import torch
from safetensors.torch import load_file

from etchat.data import check
from etchat.data.dataset import DataArguments, SupervisedDataset
from etchat.train.train import train
from etchat.train.trainer import ETChatTrainer, NonFiniteTrainingError
from tests.test_train import data, stage1_args, stage1_dir, stage3_args  # noqa: F401 - fixtures


def stage3_samples(data) -> list[dict]:
    with open(data["stage3"]) as f:
        return json.load(f)


def write_samples(path, samples) -> str:
    with open(path, "w") as f:
        json.dump(samples, f)  # writes NaN as the token NaN, which json reads back (as the published files could hold)
    return str(path)


def bad_time_samples(data) -> list[dict]:
    """The four stage-3 samples, each with one bad time field, plus the first again (an exact duplicate)."""
    samples = stage3_samples(data)
    nan, text, negative, past = (json.loads(json.dumps(s)) for s in samples)
    nan["tgt"][0] = math.nan
    text["tgt"][0] = "5.0"
    negative["src"] = [-3.0]
    past["tgt"][1] = 80.0  # the video lasts 8 s
    return [nan, text, negative, past]


def error_lines(capfd) -> list[str]:
    """The ERROR lines training logged (its logging setup replaces pytest's log capture: read stderr)."""
    return [line for line in capfd.readouterr().err.splitlines() if " ERROR " in line]


def test_the_issues_nan_time_is_skipped_and_the_model_stays_finite(stage1_dir, data, tmp_path, capfd):
    samples = stage3_samples(data)
    samples[1]["tgt"][0] = math.nan
    anno = write_samples(tmp_path / "nan.json", samples)
    out = tmp_path / "out"
    train(stage3_args(stage1_dir, {**data, "stage3": anno}, str(out), 3, False) + ["--report_to", "none"])
    logged = capfd.readouterr().err
    assert "1 of 4 training samples cannot be used (1 times that are not finite" in logged
    assert "'tgt' holds nan, not a finite time" in logged
    for name in ("adapter_model.safetensors", "pytorch_model.safetensors"):
        assert all(torch.isfinite(tensor).all() for tensor in load_file(str(out / name)).values())
    # Every file of the save and of its checkpoint is readable as the umask allows (safetensors alone writes 0600).
    expected = default_mode()
    files = [path for path in out.rglob("*") if path.is_file()]
    assert any(p.name == "adapter_model.safetensors" and p.parent.name == "checkpoint-3" for p in files)
    modes = {str(path.relative_to(out)): path.stat().st_mode & 0o777 for path in files}
    assert {name: oct(mode) for name, mode in modes.items() if mode != expected} == {}
    # --strict refuses the file, before the model loads.
    with pytest.raises(SystemExit) as stop:
        train(stage3_args(stage1_dir, {**data, "stage3": anno}, str(tmp_path / "strict"), 4, True) + ["--strict"])
    assert stop.value.code == 2 and not os.path.exists(tmp_path / "strict" / "model.safetensors")


def test_every_time_field_is_checked_for_training_and_by_the_data_check(data, tmp_path, capsys, caplog):
    samples = stage3_samples(data)
    bad = bad_time_samples(data)
    reversed_span = json.loads(json.dumps(samples[0]))
    reversed_span["id"], reversed_span["tgt"] = "reversed", [6.0, 2.0]  # "It appears from <vid> to <vid>."
    shared_id = {**json.loads(json.dumps(samples[2])), "id": samples[3]["id"]}  # another sample under an earlier id
    everything = [samples[0], *bad, reversed_span, dict(samples[0]), samples[3], shared_id]
    anno = write_samples(tmp_path / "anno.json", everything)
    options = DataArguments(annotation_path=[anno], video_folder=data["media"], use_matching=True)
    dataset = SupervisedDataset(None, None, options)
    assert [s["id"] for s in dataset.samples] == [samples[0]["id"], samples[3]["id"], samples[3]["id"]]
    assert "6 of 9 training samples cannot be used (5 times that are not finite" in caplog.text
    assert "1 samples whose key repeats an earlier one" in caplog.text
    assert "1 of 9 training samples: samples sharing their id with an earlier, different sample (kept)" in caplog.text

    assert check.main([anno, data["media"], "--stage", "3", "--report", str(tmp_path / "report.json")]) == 1
    assert "RESULT: 6 of 9 samples would be lost" in capsys.readouterr().out
    report = json.dumps(json.loads((tmp_path / "report.json").read_text())["problems"])
    for reason in ("holds nan, not a finite time", "holds '5.0', not a finite time", "holds -3.0 s, outside",
                   "holds 80.0 s, outside the video (0-8.0 s)", "times 6.0 and 2.0 ends before it starts",
                   "(same id 'tvg0', same content)"):  # fmt: skip
        assert reason in report, reason


def test_benchmark_annotations_times_are_checked_by_the_data_check(tmp_path, capsys):
    from tests.test_infer import ALL_SAMPLES

    samples = [dict(ALL_SAMPLES[1], tgt=[[4, 2]]), dict(ALL_SAMPLES[2], idx=7, tgt=[[0, 99]]), dict(ALL_SAMPLES[3])]
    anno = write_samples(tmp_path / "bench.json", samples)
    assert check.main([anno, str(tmp_path)]) == 1
    report = capsys.readouterr().out
    assert "holds the span [4, 2], which ends before it starts" in report
    assert "'tgt' holds 99 s, outside the annotated duration (0-3.0 s)" in report


def test_the_data_check_decodes_at_the_models_input_size_with_few_workers(data, monkeypatch):
    import etchat.data.video as video

    calls = []
    real = video.load_video

    def spy(path, *args, **kwargs):
        calls.append(kwargs.get("short_side"))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(video, "load_video", spy)
    assert check.build_parser().parse_args([data["stage3"], data["media"]]).workers == check.DEFAULT_WORKERS <= 2
    check.main([data["stage3"], data["media"], "--decode"])
    assert calls and set(calls) == {224}


# ---- non-finite values while training -----------------------------------------------------------------------------


def test_a_non_finite_loss_stops_training_at_once_naming_step_and_samples(stage1_dir, data, tmp_path, capfd):
    out = tmp_path / "out"
    argv = stage3_args(stage1_dir, data, str(out), 6, True) + ["--report_to", "none", "--save_steps", "1"]
    argv += ["--learning_rate", "1e30", "--lora_lr", "1e30", "--max_grad_norm", "0"]  # the weights blow up at step 1
    with pytest.raises(SystemExit) as stop:
        train(argv)
    assert stop.value.code == 1
    (line,) = error_lines(capfd)
    line = line.split(": ", 1)[1]  # after the logger's prefix
    assert line.startswith("step 2: the loss is nan on the batch of sample ") and "(id tvg" in line
    assert not (out / "model.safetensors").exists()  # no final model
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    assert checkpoints == ["checkpoint-1"]  # written before the failure, with finite (huge) weights
    for path in (out / "checkpoint-1").glob("*.safetensors"):
        assert all(torch.isfinite(t).all() for t in load_file(str(path)).values())


def test_a_non_finite_gradient_stops_training(stage1_dir, data, tmp_path, capfd, monkeypatch):
    real_step = ETChatTrainer.training_step

    def poisoned_gradients(self, model, inputs, num_items_in_batch=None):
        loss = real_step(self, model, inputs, num_items_in_batch)
        next(p for p in model.parameters() if p.requires_grad).grad.fill_(math.inf)
        return loss

    monkeypatch.setattr(ETChatTrainer, "training_step", poisoned_gradients)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as stop:
        train(stage3_args(stage1_dir, data, str(out), 2, True) + ["--report_to", "none"])
    assert stop.value.code == 1
    (line,) = error_lines(capfd)
    line = line.split(": ", 1)[1]
    assert line.startswith("step 1: the gradient norm is ") and "sample " in line
    assert not (out / "model.safetensors").exists()


def test_no_checkpoint_or_model_with_non_finite_weights_is_written(stage1_dir, data, tmp_path):
    from etchat.train.train import prepare

    argv = stage3_args(stage1_dir, data, str(tmp_path / "out"), 2, True) + ["--report_to", "none"]
    trainer, model_args, _ = prepare(argv)
    trained = next(p for p in trainer.model.parameters() if p.requires_grad)
    with torch.no_grad():
        trained.view(-1)[0] = math.nan
    with pytest.raises(NonFiniteTrainingError, match="hold NaN or infinite values"):
        trainer._save_checkpoint(trainer.model, None)
    with pytest.raises(NonFiniteTrainingError, match="hold NaN or infinite values"):
        trainer.save_final_model(base_model_path=model_args.model_name_or_path)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# ---- resuming and files ---------------------------------------------------------------------------------------------


def damage_zip_entry(path, suffix: str = "data.pkl") -> None:
    """Overwrite the bytes of one entry of a torch zip file, leaving the zip directory whole (the check that finds
    cut files passes; loading fails)."""
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for info, content in entries:
            archive.writestr(info, b"\x00" * len(content) if info.filename.endswith(suffix) else content)


def test_a_damaged_optimizer_state_is_named_in_one_line(tiny_base, data, stage1_dir, tmp_path, capfd):
    import shutil

    out = tmp_path / "out"
    shutil.copytree(stage1_dir, out)
    damage_zip_entry(out / "checkpoint-2" / "optimizer.pt")
    with pytest.raises(SystemExit) as stop:
        train(stage1_args(tiny_base, data, str(out), max_steps=3))
    assert stop.value.code == 2
    (line,) = error_lines(capfd)
    assert f"{out / 'checkpoint-2' / 'optimizer.pt'} does not load" in line


def default_mode() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def test_saved_weights_are_readable_by_everyone_the_umask_allows(stage1_dir, tiny_base):
    expected = default_mode()
    for path in [os.path.join(stage1_dir, "model.safetensors"), *os.listdir(tiny_base["model_name_or_path"])]:
        path = os.path.join(tiny_base["model_name_or_path"], path) if not os.path.isabs(path) else path
        assert os.stat(path).st_mode & 0o777 == expected, path
    for checkpoint_file in os.listdir(os.path.join(stage1_dir, "checkpoint-2")):
        path = os.path.join(stage1_dir, "checkpoint-2", checkpoint_file)
        if os.path.isfile(path):
            assert os.stat(path).st_mode & 0o777 == expected, path
