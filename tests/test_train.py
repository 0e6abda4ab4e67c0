"""Training: trainable-parameter selection, optimizer groups, save formats, resuming, loss logging, stage scripts.

The runs here are in-process, single-process and a couple of steps long on the tiny model; the multi-process runs
(DDP, DeepSpeed) are in test_train_distributed.py.
"""

import json
import os
import re
import shlex
import subprocess
import sys

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import HfArgumentParser, set_seed
from transformers.models.instructblip.modeling_instructblip import InstructBlipQFormerAttention
from video_utils import write_test_video

from etchat.constants import MATCH_TOKEN
from etchat.data.conversation import get_conv
from etchat.data.tokenization import tokenize
from etchat.model.generation import GenerationRequest, GenerationSettings, generate
from etchat.model.loading import ADAPTER_FILE, PARTIAL_FILE, load_etchat
from etchat.toy.tiny import build_untrained, training_args
from etchat.train.arguments import DataArguments, ModelArguments, TrainingArguments
from etchat.train.checkpoints import find_last_checkpoint
from etchat.train.train import add_training_lora, build_model, train
from etchat.train.trainer import ETChatTrainer, select_trainable_parameters

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED_KEYS = os.path.join(ROOT, "etchat", "model", "keys", "etchat_phi3_full.tsv")
NUM_VIDEOS = 4
VIDEO_SECONDS = 8  # 16 frames at 2 fps -> 8 frames at the 1 fps the model samples


# ---- shared helpers (also used by test_train_distributed.py) --------------------------------------------------------
def write_tiny_data(root: str) -> dict:
    """A few short videos and one image with stage-1 (plain captions) and stage-3 (<vid> matching) annotations."""
    os.makedirs(os.path.join(root, "media"), exist_ok=True)
    for i in range(NUM_VIDEOS):
        write_test_video(os.path.join(root, "media", f"v{i}.mp4"), num_frames=2 * VIDEO_SECONDS, fps=2, size=(32, 32))
    Image.new("RGB", (40, 30), (200, 30, 30)).save(os.path.join(root, "media", "red.png"))

    def turn(question, answer):
        return [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]

    stage1 = [{"id": "img", "image": "red.png", "conversations": turn("<image>", "a red picture")}]
    stage1 += [
        {"id": f"cap{i}", "video": f"v{i}.mp4", "conversations": turn("<image>", f"the colour changes {i} times")}
        for i in range(NUM_VIDEOS - 1)
    ]
    stage3 = [
        {
            "id": f"tvg{i}",
            "video": f"v{i}.mp4",
            "duration": float(VIDEO_SECONDS),
            "src": [1.0],
            "tgt": [float(2 + i % 3), float(5 + i % 2)],
            "conversations": turn(
                "<image>\nAfter <vid>, when does the red circle appear?", "It appears from <vid> to <vid>."
            ),
        }
        for i in range(NUM_VIDEOS)
    ]
    paths = {"media": os.path.join(root, "media")}
    for name, samples in (("stage1", stage1), ("stage3", stage3)):
        paths[name] = os.path.join(root, f"{name}.json")
        with open(paths[name], "w") as f:
            json.dump(samples, f)
    return paths


def stage1_args(spec: dict, data: dict, output_dir: str, max_steps: int = 2) -> list[str]:
    """Stage 1 as published (plain template, projector only, full save), shrunk to the tiny model and data."""
    return [
        "--model_name_or_path", spec["model_name_or_path"], "--language_model", "phi3", "--conv_type", "plain",
        "--pretrain_vision_tower", spec["pretrain_vision_tower"], "--pretrain_qformer", spec["pretrain_qformer"],
        *training_args(spec),
        "--anno_path", data["stage1"], "--image_path", data["media"], "--video_path", data["media"],
        "--tuning_mode", "projector", "--use_matching", "False", "--bi_attention", "False",
        "--output_dir", output_dir, "--save_full_model", "True", "--save_strategy", "steps", "--save_steps", "2",
        "--per_device_train_batch_size", "2", "--max_steps", str(max_steps), "--learning_rate", "1e-3",
        "--logging_steps", "1", "--report_to", "none", "--dataloader_num_workers", "0", "--use_cpu", "True",
    ]  # fmt: skip


def stage3_args(stage1_dir: str, data: dict, output_dir: str, max_steps: int, save_full_model: bool) -> list[str]:
    """Stage 3 as published (LoRA, attention mode, matching, bidirectional frames), shrunk."""
    return [
        "--model_name_or_path", stage1_dir, "--language_model", "phi3", "--conv_type", "phi3",
        "--anno_path", data["stage3"], "--video_path", data["media"],
        "--lora_enable", "True", "--lora_r", "8", "--lora_alpha", "16", "--lora_lr", "5e-4",
        "--tuning_mode", "attention", "--use_matching", "True", "--bi_attention", "True", "--alpha", "2.0",
        "--output_dir", output_dir, "--save_full_model", str(save_full_model), "--save_strategy", "steps",
        "--save_steps", "3", "--per_device_train_batch_size", "1", "--max_steps", str(max_steps),
        "--learning_rate", "1e-3", "--lr_scheduler_type", "constant", "--logging_steps", "1",
        "--gradient_checkpointing", "True", "--dataloader_num_workers", "0", "--seed", "7",
    ]  # fmt: skip


def generate_once(model_dir: str):
    """Load a saved model with load_etchat and answer one question about a random video, greedily."""
    model, tokenizer = load_etchat(model_dir)
    conv = get_conv(model.config.conv_type)
    conv.append_message(conv.roles[0], "<image>\nWhen does the red circle appear?")
    conv.append_message(conv.roles[1], None)
    request = GenerationRequest(
        input_ids=tokenize(conv.get_prompt(), tokenizer),
        video=torch.randn(VIDEO_SECONDS, 3, 224, 224, generator=torch.Generator().manual_seed(0)),
        query="When does the red circle appear?",
        src=None,
        tags=None,
    )
    eos = model.generation_config.eos_token_id
    settings = GenerationSettings(
        max_new_tokens=6, do_sample=False, eos_token_ids=tuple(eos if isinstance(eos, list) else [eos])
    )
    return generate(model, tokenizer, [request], settings)[0]


def training_losses(output_dir: str) -> dict[int, dict]:
    with open(os.path.join(output_dir, "trainer_state.json")) as f:
        history = json.load(f)["log_history"]
    return {entry["step"]: entry for entry in history if "loss" in entry}


# ---- fixtures --------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_tiny_data(str(tmp_path_factory.mktemp("train_data")))


@pytest.fixture(scope="module")
def stage1_dir(tiny_base, data, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("stage1"))
    train(stage1_args(tiny_base, data, out))
    return out


@pytest.fixture(scope="module")
def stage3_dir(stage1_dir, data, tmp_path_factory):
    """Stage 3 saved as adapter + trainables, with a checkpoint at step 3 and TensorBoard logs."""
    out = str(tmp_path_factory.mktemp("stage3"))
    train(stage3_args(stage1_dir, data, out, max_steps=3, save_full_model=False) + ["--report_to", "tensorboard"])
    return out


@pytest.fixture
def fresh_model(tiny_base):
    set_seed(0)
    model, _ = build_untrained(tiny_base)
    return model.train()


# ---- which parameters train ------------------------------------------------------------------------------------------
def expected_trainable(model, tuning_mode: str, use_matching: bool) -> set[int]:
    """Parameter ids that train, from the module structure (not from names)."""
    inner = model.model
    projectors = [inner.qformer_proj, inner.qformer_q_proj, inner.qformer_k_proj, inner.qformer_v_proj]
    if tuning_mode == "projector":
        modules, params = projectors, []
    elif tuning_mode == "qformer":
        modules, params = [*projectors, inner.qformer_bert, inner.qformer_ln], [inner.qformer_query]
    elif tuning_mode == "attention":
        attention = [m for m in inner.qformer_bert.modules() if isinstance(m, InstructBlipQFormerAttention)]
        assert len(attention) == 3  # 2 self-attention layers, cross-attention in layer 0 only
        modules, params = [*projectors, inner.qformer_ln, *attention], [inner.qformer_query]
    else:  # llm
        frozen = {id(p) for p in inner.vision_tower.parameters()}
        modules, params = [], [p for p in model.parameters() if id(p) not in frozen]
    if use_matching:
        modules += [inner.embed_tokens, model.lm_head, model.frm_head, model.vid_head]
    return {id(p) for m in modules for p in m.parameters()} | {id(p) for p in params}


@pytest.mark.parametrize("use_matching", [False, True])
@pytest.mark.parametrize("tuning_mode", ["projector", "qformer", "attention", "llm"])
def test_tuning_mode_selects_the_modules_of_the_original(fresh_model, tuning_mode, use_matching):
    names = select_trainable_parameters(fresh_model, tuning_mode, use_matching)
    trainable = {id(p) for p in fresh_model.parameters() if p.requires_grad}
    assert trainable == expected_trainable(fresh_model, tuning_mode, use_matching)
    assert len(names) == len(trainable)


def lora_args(**overrides) -> TrainingArguments:
    fields = dict(output_dir="unused", tuning_mode="attention", lora_enable=True, lora_r=4, lora_alpha=8)
    fields.update(use_cpu=True, report_to="none", **overrides)
    return TrainingArguments(**fields)


def test_lora_adds_adapters_to_llm_attention_only(fresh_model):
    model = add_training_lora(fresh_model.requires_grad_(False), lora_args())
    names = select_trainable_parameters(model, "attention", use_matching=True)
    lora = [n for n in names if "lora_" in n]
    # 2 decoder layers x (qkv_proj, o_proj) x (A, B)
    assert len(lora) == 8
    assert all(re.search(r"\.model\.layers\.\d\.self_attn\.(qkv_proj|o_proj)\.lora_[AB]\.", n) for n in lora)
    base = model.get_base_model()
    expected = expected_trainable(base, "attention", True)
    other = {id(p) for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n}
    assert other == expected


def test_optimizer_groups_lora_lr_and_no_decay_for_biases_and_norms(fresh_model, tmp_path):
    args = lora_args(output_dir=str(tmp_path), learning_rate=1e-3, lora_lr=5e-4, weight_decay=0.1)
    model = add_training_lora(fresh_model.requires_grad_(False), args)
    select_trainable_parameters(model, "attention", use_matching=True)
    optimizer = ETChatTrainer(model=model, args=args).create_optimizer()

    norm_params = {
        id(p)
        for m in model.modules()
        if isinstance(m, nn.LayerNorm) or type(m).__name__.endswith("RMSNorm")
        for p in m.parameters(recurse=False)
    }
    seen = {}
    for group in optimizer.param_groups:
        for p in group["params"]:
            seen[id(p)] = (group["lr"], group["weight_decay"])
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(seen) == {id(p) for p in trainable.values()}
    for name, p in trainable.items():
        lr, decay = seen[id(p)]
        assert lr == (5e-4 if "lora_" in name else 1e-3), name
        no_decay = name.endswith(".bias") or id(p) in norm_params
        assert decay == (0.0 if no_decay else 0.1), name
    # Without lora_lr every group runs at the base rate.
    args = lora_args(output_dir=str(tmp_path), learning_rate=1e-3, weight_decay=0.1)
    optimizer = ETChatTrainer(model=model, args=args).create_optimizer()
    assert {g["lr"] for g in optimizer.param_groups} == {1e-3}


# ---- save formats ----------------------------------------------------------------------------------------------------
def key_template(key: str) -> str:
    return re.sub(r"\.\d+\.", ".#.", key)


def test_full_save_uses_published_names_and_loads(stage1_dir, tiny_base):
    with open(PUBLISHED_KEYS) as f:
        published = {key_template(line.split("\t")[0]) for line in f if line.strip()}
    saved = load_file(os.path.join(stage1_dir, "model.safetensors"))
    assert {key_template(k) for k in saved} <= published
    # The Q-Former is frozen at stage 1: it must hold the .pth weights, under the names the .pth uses.
    qformer = torch.load(tiny_base["pretrain_qformer"], weights_only=True)["model"]
    for key, value in qformer.items():
        if key.startswith("Qformer.bert."):
            assert torch.equal(saved["model.qformer_bert." + key[len("Qformer.") :]], value), key
    with open(os.path.join(stage1_dir, "config.json")) as f:
        config = json.load(f)
    assert config["model_type"] == "etchat_phi3" and config["conv_type"] == "plain"
    assert config["pretrain_qformer"] is None and config["load_base_models"] is False
    assert config["model_name_or_path"] == tiny_base["model_name_or_path"]
    answer = generate_once(stage1_dir)
    assert len(answer.token_ids) > 0


def test_adapter_save_holds_adapter_trainables_and_base_path(stage1_dir, stage3_dir):
    for name in (ADAPTER_FILE, "adapter_config.json", PARTIAL_FILE, "config.json", "tokenizer.json"):
        assert os.path.isfile(os.path.join(stage3_dir, name)), name
    with open(os.path.join(stage3_dir, "config.json")) as f:
        config = json.load(f)
    assert config["model_name_or_path"] == stage1_dir and config["use_matching"] is True

    partial = load_file(os.path.join(stage3_dir, PARTIAL_FILE))
    assert not any("lora_" in k or "vision_tower" in k for k in partial)
    assert any(".attention.self.query." in k for k in partial)  # published Q-Former names
    assert any(k.endswith("frm_head.3.weight") for k in partial) and any("embed_tokens" in k for k in partial)

    model, tokenizer = load_etchat(stage3_dir)
    assert tokenizer.convert_tokens_to_ids(MATCH_TOKEN) == model.config.match_token_id
    # Merged weight = base + B A * alpha / r, computed here from the files.
    adapter = load_file(os.path.join(stage3_dir, ADAPTER_FILE))
    base = load_file(os.path.join(stage1_dir, "model.safetensors"))
    prefix = "base_model.model.model.layers.1.self_attn.qkv_proj"
    delta = adapter[prefix + ".lora_B.weight"] @ adapter[prefix + ".lora_A.weight"] * (16 / 8)
    merged = model.model.layers[1].self_attn.qkv_proj.weight
    torch.testing.assert_close(merged, base["model.layers.1.self_attn.qkv_proj.weight"] + delta)
    assert delta.abs().max() > 0  # the adapter trained
    torch.testing.assert_close(model.frm_head[3].weight, partial["base_model.model.frm_head.3.weight"])
    assert len(generate_once(stage3_dir).token_ids) > 0


def test_tensorboard_logs_lm_and_matching_loss(stage3_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    event_files = [os.path.join(d, f) for d, _, fs in os.walk(stage3_dir) for f in fs if "tfevents" in f]
    assert len(event_files) == 1
    events = EventAccumulator(event_files[0])
    events.Reload()
    scalars = {tag: {e.step: e.value for e in events.Scalars(tag)} for tag in events.Tags()["scalars"]}
    assert {"train/loss", "train/lm_loss", "train/match_loss"} <= scalars.keys()
    assert sorted(scalars["train/loss"]) == [1, 2, 3]
    for step, loss in scalars["train/loss"].items():
        # One process, no accumulation: each logged loss is one batch's lm_loss + match_loss.
        assert loss == pytest.approx(scalars["train/lm_loss"][step] + scalars["train/match_loss"][step], rel=1e-4)
        assert scalars["train/match_loss"][step] > 0


# ---- resuming --------------------------------------------------------------------------------------------------------
def hf_name(published: str) -> str:
    """transformers' Q-Former names (attention.attention.*) for the original BERT ones (attention.self.*)."""
    return published.replace(".attention.self.", ".attention.attention.").replace(
        ".crossattention.self.", ".crossattention.attention."
    )


def parse(argv):
    return HfArgumentParser((ModelArguments, DataArguments, TrainingArguments)).parse_args_into_dataclasses(args=argv)


@pytest.mark.parametrize("stage", ["stage1", "stage3"])
def test_checkpoint_restores_non_lora_trainables(stage, tiny_base, data, stage1_dir, stage3_dir, tmp_path):
    if stage == "stage1":
        argv, checkpoint = stage1_args(tiny_base, data, str(tmp_path)), os.path.join(stage1_dir, "checkpoint-2")
    else:
        argv = stage3_args(stage1_dir, data, str(tmp_path), 3, False)
        checkpoint = os.path.join(stage3_dir, "checkpoint-3")
    model_args, _, args = parse(argv + ["--report_to", "none", "--use_cpu", "True"])
    set_seed(123)  # fresh heads and adapters differ from the checkpoint's
    model, _ = build_model(model_args, args)
    trainable_before = [n for n, p in model.named_parameters() if p.requires_grad]
    saved = {hf_name(k): v for k, v in load_file(os.path.join(checkpoint, PARTIAL_FILE)).items()}
    if os.path.isfile(os.path.join(checkpoint, ADAPTER_FILE)):
        adapter = load_file(os.path.join(checkpoint, ADAPTER_FILE))
        saved.update({k.replace(".weight", ".default.weight"): v for k, v in adapter.items()})
    params = dict(model.named_parameters())
    assert saved.keys() <= params.keys()
    assert any(not torch.equal(params[k], v) for k, v in saved.items())

    ETChatTrainer(model=model, args=args)._load_from_checkpoint(checkpoint)
    for key, value in saved.items():
        assert torch.equal(params[key], value), key
    assert [n for n, p in model.named_parameters() if p.requires_grad] == trainable_before


def write_checkpoint(folder, step: int) -> None:
    """The files a Trainer checkpoint holds: weights, optimizer and scheduler, RNG state, trainer state."""
    folder.mkdir()
    save_file({"w": torch.full((64,), float(step))}, str(folder / "model.safetensors"))
    torch.save({"state": {0: torch.zeros(64)}}, folder / "optimizer.pt")
    torch.save({"python": [step]}, folder / "rng_state.pth")
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def cut(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def test_find_last_checkpoint_takes_the_newest_whole_one_and_says_why_it_skipped(tmp_path, caplog):
    assert find_last_checkpoint(str(tmp_path / "missing")) is None
    for step in (5, 10, 15, 20, 25):
        write_checkpoint(tmp_path / f"checkpoint-{step}", step)
    cut(tmp_path / "checkpoint-25" / "trainer_state.json")
    cut(tmp_path / "checkpoint-20" / "optimizer.pt")
    cut(tmp_path / "checkpoint-15" / "model.safetensors")
    (tmp_path / "checkpoint-10" / "trainer_state.json").unlink()  # killed before the Trainer's last file
    (tmp_path / "checkpoint-x").mkdir()
    assert find_last_checkpoint(str(tmp_path)) == str(tmp_path / "checkpoint-5")
    skipped = [r.message for r in caplog.records if r.message.startswith("Skipping")]
    assert len(skipped) == 4
    assert "checkpoint-25: trainer_state.json: not valid JSON" in skipped[0]
    assert "checkpoint-20: optimizer.pt: not a whole torch file" in skipped[1]
    assert "checkpoint-15: model.safetensors: truncated" in skipped[2]
    assert "checkpoint-10: no trainer_state.json" in skipped[3]


# ---- command line and scripts ----------------------------------------------------------------------------------------
def test_help_works():
    # In-process: tests/test_layout.py runs a command's --help in a fresh process once for all commands.
    from etchat.train.train import build_parser

    text = build_parser().format_help()
    assert text.startswith("usage: python -m etchat.train.train ")
    for flag in ("--tuning_mode", "--lora_lr", "--anno_path", "--vision_config", "--max_steps", "--warmup_ratio"):
        assert flag in text


def script_command(stage: int, *args: str, **env: str) -> list[str]:
    environment = {**os.environ, "SKIP_SETUP": "1", "DRY_RUN": "1", "DTYPE": "float32", "NPROC_PER_NODE": "1", **env}
    environment["PATH"] = os.path.dirname(sys.executable) + os.pathsep + environment["PATH"]
    script = os.path.join(ROOT, "scripts", f"train_stage_{stage}.sh")
    result = subprocess.run(["bash", script, *args], capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr
    return shlex.split(result.stdout)


def option(argv: list[str], flag: str) -> str:
    return argv[len(argv) - 1 - argv[::-1].index(flag) + 1]  # the last occurrence wins, as in argparse


# stage: (global batch, per-device batch, learning rate, lora lr or None, tuning mode) from docs/design.md §6
PUBLISHED = {
    1: (256, 4, 1e-3, None, "projector"),
    2: (128, 1, 2e-5, 2e-4, "qformer"),
    3: (32, 1, 2e-5, 5e-5, "attention"),
}


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_stage_scripts_parse_and_keep_the_global_batch(stage):
    global_batch, per_device, lr, lora_lr, tuning_mode = PUBLISHED[stage]
    for nproc, nnodes in ((8, 1), (2, 2)):
        argv = script_command(stage, NPROC_PER_NODE=str(nproc), NNODES=str(nnodes), MASTER_PORT="29777")
        assert argv[0] == "torchrun" and option(argv, "--nproc_per_node") == str(nproc)
        assert option(argv, "--nnodes") == str(nnodes) and option(argv, "--master_port") == "29777"
        train_argv = argv[argv.index("etchat.train.train") + 1 :]
        accumulation = int(option(train_argv, "--gradient_accumulation_steps"))
        assert int(option(train_argv, "--per_device_train_batch_size")) == per_device
        assert nproc * nnodes * per_device * accumulation == global_batch
    assert option(train_argv, "--deepspeed") == "scripts/zero2.json" and "--fp16" not in train_argv
    # Every flag of the script parses (the DeepSpeed config is read by the Trainer, checked above).
    i = train_argv.index("--deepspeed")
    model_args, data_args, args = parse(train_argv[:i] + train_argv[i + 2 :] + ["--use_cpu", "True"])
    assert (args.learning_rate, args.lora_lr, args.tuning_mode) == (lr, lora_lr, tuning_mode)
    assert args.warmup_steps == 0.03 and args.num_train_epochs == 1 and args.save_full_model
    assert model_args.use_matching == (stage == 3) and model_args.bi_attention == (stage == 3)

    extra = script_command(
        stage, "/prev/stage", EXTRA_ARGS="--max_steps 5  --learning_rate 0.5", OUTPUT_DIR="/tmp/o", DTYPE="float16"
    )
    assert option(extra, "--max_steps") == "5" and option(extra, "--learning_rate") == "0.5"
    assert option(extra, "--output_dir") == "/tmp/o" and option(extra, "--fp16") == "True"
    assert option(extra, "--model_name_or_path") == "/prev/stage"
    default = script_command(stage, DEEPSPEED_CONFIG="none")
    previous = "model_zoo/Phi-3-mini-4k-instruct" if stage == 1 else f"work_dirs/etchat-stage-{stage - 1}"
    assert option(default, "--model_name_or_path") == previous
    assert option(default, "--output_dir") == f"work_dirs/etchat-stage-{stage}" and "--deepspeed" not in default
