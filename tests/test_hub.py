"""Model names: folders or Hugging Face Hub repo ids, resolved offline against a Hub cache the tests write in the real
layout; every place that takes a model (loading, partial checkpoints' bases, chat, inference, training)."""

import argparse
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import save_file

from etchat.hub import PHI3_REPO, ModelNotFoundError, resolve_file, resolve_model
from etchat.model.loading import PARTIAL_FILE, load_etchat, save_etchat
from tests.hub_cache import commit_hash, write_snapshot

ETCHAT_REPO = "PolyU-ChenLab/ETChat-Phi3-Mini-Stage-3"


def logits(model, tokenizer):
    with torch.no_grad():
        return model(input_ids=torch.tensor([[tokenizer.bos_token_id, 5, 6, 7]])).logits


# ---- resolving a name -----------------------------------------------------------------------------------------------


def test_a_folder_is_used_as_it_is(hub_cache, tmp_path, monkeypatch):
    folder = tmp_path / "org" / "name"  # a folder that also reads as a repo id
    folder.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    resolved = resolve_model("org/name")
    assert (resolved.path, resolved.repo_id, resolved.commit) == ("org/name", None, None)


def test_relative_published_paths_are_found_above_the_checkpoint(hub_cache, tmp_path, monkeypatch):
    (tmp_path / "model_zoo" / "base").mkdir(parents=True)
    (tmp_path / "work" / "ckpt").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "work")
    assert resolve_model("model_zoo/base", relative_to=str(tmp_path / "work" / "ckpt")).path == str(
        tmp_path / "model_zoo" / "base"
    )


def test_a_repo_id_resolves_to_its_snapshot_at_a_branch_tag_or_commit(hub_cache, tmp_path, tiny_base, monkeypatch):
    llm = tiny_base["model_name_or_path"]
    old, new = commit_hash("old"), commit_hash("new")
    old_snapshot = write_snapshot(hub_cache, "org/tiny-llm", llm, old, refs=("v1",))
    new_snapshot = write_snapshot(hub_cache, "org/tiny-llm", llm, new, refs=("main",))
    monkeypatch.chdir(tmp_path)

    latest = resolve_model("org/tiny-llm")
    assert (latest.path, latest.repo_id, latest.commit) == (str(new_snapshot), "org/tiny-llm", new)
    assert resolve_model("org/tiny-llm", revision="v1").path == str(old_snapshot)
    assert resolve_model("org/tiny-llm", revision=old).commit == old
    assert sorted(os.listdir(latest.path)) == sorted(os.listdir(llm))


def test_an_absent_published_model_zoo_folder_falls_back_to_its_hub_repo(hub_cache, tmp_path, tiny_base, monkeypatch):
    commit = commit_hash("phi3")
    snapshot = write_snapshot(hub_cache, PHI3_REPO, tiny_base["model_name_or_path"], commit)
    monkeypatch.chdir(tmp_path)  # no model_zoo/ here
    resolved = resolve_model("model_zoo/Phi-3-mini-4k-instruct")
    assert (resolved.path, resolved.repo_id, resolved.commit) == (str(snapshot), PHI3_REPO, commit)


def test_names_that_cannot_be_had_are_one_line_errors_naming_them(hub_cache, tmp_path, tiny_base, monkeypatch):
    write_snapshot(hub_cache, "org/tiny-llm", tiny_base["model_name_or_path"], commit_hash("a"))
    monkeypatch.chdir(tmp_path)
    cases = {
        "org/absent": ["org/absent", "not in the Hub cache", str(hub_cache), "HF_HUB_OFFLINE"],
        str(tmp_path / "missing"): [f"{tmp_path / 'missing'}: no such checkpoint folder"],
        "./org/absent": ["./org/absent: no such checkpoint folder"],
    }
    for name, parts in cases.items():
        with pytest.raises(ModelNotFoundError) as error:
            resolve_model(name)
        message = str(error.value)
        assert "\n" not in message and all(part in message for part in parts), message
    with pytest.raises(ModelNotFoundError, match="org/tiny-llm at revision v9 is not in the Hub cache"):
        resolve_model("org/tiny-llm", revision="v9")


def test_a_missing_published_base_file_names_the_download_command(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError) as error:
        resolve_file("model_zoo/eva_vit_g.pth")
    assert str(error.value) == (
        "model_zoo/eva_vit_g.pth: no such file; `python -m etchat.download` fetches it from "
        "https://storage.googleapis.com/sfr-vision-language-research/LAVIS/models/BLIP2/eva_vit_g.pth"
    )


# ---- the places that take a model -----------------------------------------------------------------------------------


def test_load_etchat_takes_a_hub_repo_id(hub_cache, tiny_checkpoint):
    write_snapshot(hub_cache, ETCHAT_REPO, tiny_checkpoint, commit_hash("stage3"))
    from_hub, tokenizer = load_etchat(ETCHAT_REPO)
    from_folder, _ = load_etchat(tiny_checkpoint)
    assert torch.equal(logits(from_hub, tokenizer), logits(from_folder, tokenizer))


def test_a_partial_checkpoint_loads_its_hub_base_at_the_pinned_commit(hub_cache, tiny_checkpoint, tmp_path):
    """The base moves on the Hub (a new commit on main); a partial checkpoint keeps the commit it was trained on."""
    pinned = commit_hash("base-v1")
    write_snapshot(hub_cache, "org/base", tiny_checkpoint, pinned, refs=())
    model, tokenizer = load_etchat(tiny_checkpoint)
    with torch.no_grad():
        model.lm_head.weight.mul_(-1.0)
    save_etchat(model, tokenizer, str(tmp_path / "moved"))
    write_snapshot(hub_cache, "org/base", tmp_path / "moved", commit_hash("base-v2"))

    partial = tmp_path / "partial"
    trained = {"model.qformer_proj.weight": model.model.qformer_proj.weight.detach() + 1.0}
    config = json.loads((tmp_path / "moved" / "config.json").read_text())
    for revision, expected_sign in ((pinned, 1.0), (None, -1.0)):
        config.update(model_name_or_path="org/base", model_revision=revision)
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(tiny_checkpoint, partial, ignore=shutil.ignore_patterns("*.safetensors", "config.json"))
        (partial / "config.json").write_text(json.dumps(config))
        save_file(trained, str(partial / PARTIAL_FILE))
        loaded, _ = load_etchat(str(partial))
        assert torch.equal(loaded.model.qformer_proj.weight, trained["model.qformer_proj.weight"])
        assert torch.equal(loaded.lm_head.weight, -expected_sign * model.lm_head.weight), revision


def test_chat_and_inference_take_a_hub_repo_id(hub_cache, tiny_checkpoint):
    from etchat.eval.runner import load_model
    from etchat.serve.session import ChatInputError, load_chat_model

    commit = commit_hash("stage3")
    write_snapshot(hub_cache, ETCHAT_REPO, tiny_checkpoint, commit, refs=())
    chat_model, tokenizer = load_chat_model(ETCHAT_REPO, device="cpu", revision=commit)
    args = argparse.Namespace(model_path=ETCHAT_REPO, model_revision=commit, device="cpu", dtype="float32")
    infer_model, _ = load_model(args)
    assert torch.equal(logits(chat_model, tokenizer), logits(infer_model, tokenizer))
    with pytest.raises(ChatInputError, match=f"{ETCHAT_REPO}: no such folder, and the Hub repo {ETCHAT_REPO} is"):
        load_chat_model(ETCHAT_REPO, device="cpu")  # no main ref in this cache


def test_training_starts_from_a_hub_repo_and_records_it_pinned(hub_cache, tiny_base, tmp_path, monkeypatch):
    """Stage 1 as published names `model_zoo/Phi-3-mini-4k-instruct`; without that folder the Hub's Phi-3 is used, and
    a partial save on top of it would name the repo at the commit used."""
    from tests.test_train import parse, stage1_args

    commit = commit_hash("phi3")
    write_snapshot(hub_cache, PHI3_REPO, tiny_base["model_name_or_path"], commit)
    monkeypatch.chdir(tmp_path)
    from etchat.train.train import build_model

    for name in ("model_zoo/Phi-3-mini-4k-instruct", PHI3_REPO):
        spec = {**tiny_base, "model_name_or_path": name}
        data = {"stage1": "unused.json", "media": "unused"}
        model_args, _, args = parse(stage1_args(spec, data, str(tmp_path / "out")))
        model, _ = build_model(model_args, args)
        assert (model.config.model_name_or_path, model.config.model_revision) == (name, commit)
