"""Checkpoint formats: base weights (.pth), full checkpoints, partial checkpoints (LoRA adapter + trainables)."""

import json
import os
import shutil

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from etchat.model.loading import (
    ADAPTER_FILE,
    PARTIAL_FILE,
    CheckpointMismatchError,
    NotETChatCheckpointError,
    add_match_token,
    load_etchat,
    save_etchat,
)
from etchat.model.lora import add_lora
from tests.conftest import build_tiny_etchat


def logits_of(model, tokenizer):
    ids = torch.tensor([[tokenizer.bos_token_id, 5, 6, 7]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_base_weights_land_where_the_published_names_say(tiny_base):
    model, _ = build_tiny_etchat(tiny_base)
    vision = torch.load(tiny_base["pretrain_vision_tower"], weights_only=True)
    qformer = torch.load(tiny_base["pretrain_qformer"], weights_only=True)["model"]
    tower = model.model.vision_tower.vision_tower
    assert torch.equal(tower.blocks[1].attn.qkv.weight, vision["blocks.1.attn.qkv.weight"])
    assert len(tower.blocks) == 2 and "blocks.2.norm1.weight" in vision  # the file's last block is not built
    layer = model.model.qformer_bert.bert.encoder.layer[0]
    assert torch.equal(
        layer.attention.attention.query.weight, qformer["Qformer.bert.encoder.layer.0.attention.self.query.weight"]
    )
    assert torch.equal(
        layer.crossattention.attention.key.weight,
        qformer["Qformer.bert.encoder.layer.0.crossattention.self.key.weight"],
    )
    embeddings = model.model.qformer_bert.bert.embeddings
    assert torch.equal(embeddings.layernorm.weight, qformer["Qformer.bert.embeddings.LayerNorm.weight"])
    assert torch.equal(model.model.qformer_query, qformer["query_tokens"])
    assert torch.equal(model.model.qformer_ln.weight, qformer["ln_vision.weight"])
    assert not any(p.requires_grad for p in tower.parameters())


def test_full_checkpoint_uses_published_names_and_round_trips(tiny_base, tiny_checkpoint):
    config = json.load(open(os.path.join(tiny_checkpoint, "config.json")))
    assert config["model_type"] == "etchat_phi3" and config["match_token_id"] is not None
    with safe_open(os.path.join(tiny_checkpoint, "model.safetensors"), "pt") as f:
        names = set(f.keys())
    assert "model.qformer_bert.bert.encoder.layer.0.attention.self.query.weight" in names
    assert "model.qformer_bert.bert.embeddings.LayerNorm.weight" in names
    assert "model.qformer_bert.bert.embeddings.position_ids" in names
    assert not any(".attention.attention." in n or "embeddings.layernorm" in n for n in names)
    assert {"frm_head.0.weight", "vid_head.3.bias", "lm_head.weight", "model.qformer_query"} <= names

    model, tokenizer = load_etchat(tiny_checkpoint)
    again, _ = load_etchat(tiny_checkpoint)
    state, state_again = model.state_dict(), again.state_dict()
    assert state.keys() == state_again.keys() and all(torch.equal(state[k], state_again[k]) for k in state)
    assert tokenizer.convert_tokens_to_ids("<vid>") == model.config.match_token_id
    auto = AutoModelForCausalLM.from_pretrained(tiny_checkpoint)
    assert type(auto).__name__ == "ETChatPhi3ForCausalLM"
    assert torch.allclose(logits_of(auto, tokenizer), logits_of(model, tokenizer))


def broken_copy(src, dst, edit):
    shutil.copytree(src, dst)
    weights = load_file(os.path.join(dst, "model.safetensors"))
    edit(weights)
    save_file(weights, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    return str(dst)


def test_missing_weights_are_an_error_that_lists_them(tiny_checkpoint, tmp_path):
    path = broken_copy(tiny_checkpoint, tmp_path / "ckpt", lambda w: w.pop("frm_head.1.weight"))
    with pytest.raises(CheckpointMismatchError, match=r"frm_head\.1\.weight"):
        load_etchat(path)


def test_unexpected_weights_are_an_error_that_lists_them(tiny_checkpoint, tmp_path):
    path = broken_copy(tiny_checkpoint, tmp_path / "ckpt", lambda w: w.update(stray=torch.zeros(2)))
    with pytest.raises(CheckpointMismatchError, match="stray"):
        load_etchat(path)


def test_a_folder_that_is_not_etchat_is_refused(tiny_base, tmp_path):
    with pytest.raises(NotETChatCheckpointError, match="not an E.T. Chat checkpoint"):
        load_etchat(tiny_base["model_name_or_path"])
    with pytest.raises(NotETChatCheckpointError, match="no config.json"):
        load_etchat(str(tmp_path))


def test_lora_targets_only_the_llm_attention_and_merges(tiny_checkpoint):
    model, tokenizer = load_etchat(tiny_checkpoint)
    peft_model = add_lora(model)
    wrapped = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_parameters() if ".lora_A" in n}
    layers = model.config.num_hidden_layers
    assert wrapped == {
        f"base_model.model.model.layers.{i}.self_attn.{proj}" for i in range(layers) for proj in ("qkv_proj", "o_proj")
    }
    config = peft_model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (128, 256, 0.05)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
    peft_model.eval()
    before = logits_of(peft_model, tokenizer)
    merged = peft_model.merge_and_unload()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(logits_of(merged, tokenizer), before, atol=1e-5)


def test_partial_checkpoint_adapter_and_trainables_on_top_of_base(tiny_checkpoint, tmp_path):
    model, tokenizer = load_etchat(tiny_checkpoint)
    peft_model = add_lora(model)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.02)
        peft_model.base_model.model.model.qformer_proj.weight.add_(1.0)
        peft_model.base_model.model.vid_head[1].bias.add_(0.5)
    out = str(tmp_path / "partial")
    peft_model.save_pretrained(out)  # adapter_model.safetensors + adapter_config.json
    trainables = {
        n: p.detach().clone()
        for n, p in peft_model.named_parameters()
        if any(k in n for k in ("qformer_proj", "vid_head"))
    }
    save_file(trainables, os.path.join(out, PARTIAL_FILE), metadata={"format": "pt"})
    config = model.config
    config.model_name_or_path = tiny_checkpoint
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    assert os.path.isfile(os.path.join(out, ADAPTER_FILE))
    assert all(k.startswith("base_model.model.") for k in load_file(os.path.join(out, PARTIAL_FILE)))

    peft_model.eval()
    expected = logits_of(peft_model.merge_and_unload(), tokenizer)
    loaded, _ = load_etchat(out)
    assert torch.allclose(logits_of(loaded, tokenizer), expected, atol=1e-5)
    assert torch.equal(loaded.model.qformer_proj.weight, trainables["base_model.model.model.qformer_proj.weight"])
    assert torch.equal(loaded.vid_head[1].bias, trainables["base_model.model.vid_head.1.bias"])


def test_partial_checkpoint_with_unknown_trainable_is_an_error(tiny_checkpoint, tmp_path):
    model, tokenizer = load_etchat(tiny_checkpoint)
    out = str(tmp_path / "partial")
    model.config.model_name_or_path = tiny_checkpoint
    model.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    save_file({"model.not_a_module.weight": torch.zeros(1)}, os.path.join(out, PARTIAL_FILE))
    with pytest.raises(CheckpointMismatchError, match="not_a_module"):
        load_etchat(out)


def test_match_token_rows_start_at_the_mean_when_the_vocabulary_grows(tiny_base, tiny_checkpoint):
    model, _ = load_etchat(tiny_checkpoint)
    tokenizer = AutoTokenizer.from_pretrained(tiny_base["model_name_or_path"])  # no <vid> yet
    model.resize_token_embeddings(len(tokenizer))  # no spare rows left
    old_in = model.get_input_embeddings().weight.detach().clone()
    old_out = model.get_output_embeddings().weight.detach().clone()
    assert add_match_token(model, tokenizer) == 1
    assert model.get_input_embeddings().weight.size(0) == len(tokenizer) == old_in.size(0) + 1
    assert torch.allclose(model.get_input_embeddings().weight[-1], old_in.mean(0), atol=1e-6)
    assert torch.allclose(model.get_output_embeddings().weight[-1], old_out.mean(0), atol=1e-6)
    assert model.config.match_token_id == tokenizer.convert_tokens_to_ids("<vid>") == old_in.size(0)


def test_save_etchat_writes_tokenizer_and_generation_config(tiny_checkpoint, tmp_path):
    model, tokenizer = load_etchat(tiny_checkpoint)
    save_etchat(model, tokenizer, str(tmp_path / "again"))
    files = set(os.listdir(tmp_path / "again"))
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= files


def test_trained_weights_of_a_full_checkpoint_are_not_replaced_by_the_base_files(tiny_checkpoint, tmp_path):
    model, tokenizer = load_etchat(tiny_checkpoint)
    assert model.config.pretrain_qformer  # the config still names the base files, as a trained stage's does
    with torch.no_grad():
        model.model.qformer_query.add_(1.0)
        model.model.vision_tower.vision_tower.cls_token.add_(1.0)
        model.model.qformer_bert.bert.encoder.layer[0].attention.attention.query.weight.add_(1.0)
    save_etchat(model, tokenizer, str(tmp_path / "trained"))
    loaded, _ = load_etchat(str(tmp_path / "trained"))
    saved, again = model.state_dict(), loaded.state_dict()
    assert all(torch.equal(saved[k], again[k]) for k in saved)


def test_peft_wrapped_model_trains_through_the_multimodal_forward(tiny_checkpoint):
    from tests.test_model import batch_with_targets

    model, tokenizer = load_etchat(tiny_checkpoint)
    peft_model = add_lora(model)  # the LoRA training uses: the batch's extra keys reach the model
    out = peft_model(**batch_with_targets(tokenizer))
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert any(p.grad is not None for n, p in peft_model.named_parameters() if "lora_A" in n)
