"""`train` scenario: stage-3-shaped training steps (forward, backward, optimizer step).

Batches look like E.T. Instruct: 30-120 frames, ~300-token phi3 conversations with `<vid>` in the question (src) and
the answer (tgt), `use_matching` and `bi_attention` on. Trainable parameters follow stage 3: LoRA on the LLM's
qkv_proj/o_proj, the Q-Former's attention layers, the compressor's own layers, embed_tokens, lm_head and the matching
heads; the vision tower is frozen. The weights are cast to one dtype (float32 on CPU, bfloat16 on GPU) and AdamW steps
them.
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import asdict, dataclass

import torch

from etchat.bench.measure import PeakMemory, StageTimer, synchronize, wrap_method
from etchat.bench.models import build_model
from etchat.bench.report import format_table
from etchat.bench.workload import SampleShape, build_training_sample, draw_shapes
from etchat.cli import DTYPES
from etchat.data.collator import DataCollator

logger = logging.getLogger(__name__)

TARGET_SPEEDUP = 1.5
# Name fragments of the stage-3 trainables besides LoRA (docs/design.md §6).
STAGE3_TRAINABLE = (
    "embed_tokens",
    "lm_head",
    "frm_head",
    "vid_head",
    "qformer_query",
    "qformer_ln",
    "qformer_proj",
    "qformer_q_proj",
    "qformer_k_proj",
    "qformer_v_proj",
)
QFORMER_ATTENTION = ("attention.", "crossattention.")


@dataclass
class TrainConfig:
    name: str
    attn: str
    gradient_checkpointing: bool = False


def default_configs() -> list[TrainConfig]:
    return [
        TrainConfig("eager", "eager"),
        TrainConfig("sdpa", "sdpa"),
        TrainConfig("eager+ckpt", "eager", True),
        TrainConfig("sdpa+ckpt", "sdpa", True),
    ]


def is_stage3_trainable(name: str) -> bool:
    if "lora_" in name:
        return True
    if "qformer_bert" in name:
        return any(fragment in name for fragment in QFORMER_ATTENTION)
    return any(fragment in name for fragment in STAGE3_TRAINABLE)


def prepare_stage3(model, lora_rank: int) -> list[torch.nn.Parameter]:
    """Add LoRA (rank r, alpha 2r, dropout 0.05) to qkv_proj/o_proj; freeze all but the stage-3 trainables."""
    from peft import LoraConfig, inject_adapter_in_model

    lora = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.05, target_modules=["qkv_proj", "o_proj"])
    inject_adapter_in_model(lora, model)
    trainable = []
    for name, param in model.named_parameters():
        param.requires_grad_(is_stage3_trainable(name) and "vision_tower" not in name)
        if param.requires_grad:
            trainable.append(param)
    return trainable


def _to_device(batch: dict, device, dtype) -> dict:
    batch = dict(batch)
    batch.pop("has_placeholder")
    for key in ("input_ids", "labels", "attention_mask"):
        batch[key] = batch[key].to(device)
    batch["images"] = [image.to(device, dtype) for image in batch["images"]]
    return batch


def run_config(config: dict) -> dict:
    device = config["device"]
    if config.get("threads"):
        torch.set_num_threads(config["threads"])
    model, tokenizer = build_model(config["geometry"], config["attn"], config["dtype"], device, config["seed"])
    trainable = prepare_stage3(model, config["lora_rank"])
    model.train()
    if config["gradient_checkpointing"]:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    dtype = next(model.parameters()).dtype
    collator = DataCollator(tokenizer, model_max_length=2048)
    shapes = [SampleShape(**s) for s in config["shapes"]]
    size = config["batch_size"]
    batches = [
        collator([build_training_sample(s, tokenizer, config["seed"]) for s in shapes[i : i + size]])
        for i in range(0, len(shapes), size)
    ]
    optimizer = torch.optim.AdamW(trainable, lr=2e-5)

    def step(batch: dict) -> float:
        loss = model(**_to_device(batch, device, dtype)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    warmup, timed = batches[: config["warmup_steps"]], batches[config["warmup_steps"] :]
    for batch in warmup:
        step(batch)
    memory = PeakMemory(device)
    memory.reset()
    timer = StageTimer(device)
    encode_timer = wrap_method(model, "encode_videos", "encode", timer)
    losses, step_seconds = [], []
    for batch in timed:
        synchronize(device)
        start = time.perf_counter()
        losses.append(step(batch))  # float(loss) waits for the step on any device
        synchronize(device)
        step_seconds.append(time.perf_counter() - start)
    wall = sum(step_seconds)
    encode_timer.remove()
    # LLM sequence tokens: text tokens (the placeholder replaced) plus one token per frame.
    tokens = sum(int(b["attention_mask"].sum()) - len(b["images"]) + sum(i.size(0) for i in b["images"]) for b in timed)
    return {
        "wall": wall,
        "steps": len(timed),
        "step_seconds": step_seconds,
        "encode_seconds": timer.seconds["encode"],
        "samples": sum(len(b["images"]) for b in timed),
        "tokens": tokens,
        "trainable_params": sum(p.numel() for p in trainable),
        "loss": losses[-1] if losses else None,
        "memory": memory.read(),
        "torch_threads": torch.get_num_threads(),
    }


def add_arguments(parser) -> None:
    parser.add_argument("--steps", type=int, help="timed optimizer steps (default 4 tiny, 10 full)")
    parser.add_argument("--warmup_steps", type=int, default=1)
    parser.add_argument("--batch_size", type=int, default=2, help="samples per step")
    parser.add_argument("--frames", type=int, nargs=2, default=(30, 120), metavar=("MIN", "MAX"))
    parser.add_argument("--prompt_tokens", type=int, nargs=2, default=(200, 260), metavar=("MIN", "MAX"))
    parser.add_argument("--answer_tokens", type=int, nargs=2, default=(40, 80), metavar=("MIN", "MAX"))
    parser.add_argument("--dtype", choices=tuple(DTYPES), help="weights dtype (default float32 CPU, bfloat16 GPU)")
    parser.add_argument("--lora_rank", type=int, help="LoRA rank (default 8 tiny, 128 full as published)")


def run(args, run_one) -> str:
    is_tiny = args.geometry == "tiny"
    steps = args.steps or (4 if is_tiny else 10)
    num_samples = (steps + args.warmup_steps) * args.batch_size
    # All samples get the full src/tgt structure; src_fraction=1 keeps every question's <vid> pair.
    shapes = draw_shapes(
        num_samples,
        tuple(args.frames),
        tuple(args.prompt_tokens),
        tuple(args.answer_tokens),
        args.seed,
        src_fraction=1.0,
    )
    dtype = args.dtype or ("bfloat16" if args.device.startswith("cuda") else "float32")
    configs = default_configs()
    if args.configs:
        wanted = args.configs.split(",")
        unknown = set(wanted) - {c.name for c in configs}
        if unknown:
            raise SystemExit(f"Unknown train configs {sorted(unknown)}; choose from {[c.name for c in configs]}")
        configs = [c for c in configs if c.name in wanted]
    common = dict(
        device=args.device,
        geometry=args.geometry,
        seed=args.seed,
        dtype=dtype,
        batch_size=args.batch_size,
        warmup_steps=args.warmup_steps,
        lora_rank=args.lora_rank or (8 if is_tiny else 128),
        threads=args.torch_threads,
        shapes=[s.to_dict() for s in shapes],
    )
    rows, results, failures = [], {}, []
    for config in configs:
        logger.info("train: running %s", config.name)
        try:
            result = run_one("etchat.bench.train:run_config", dict(common, **asdict(config)))
        except Exception as e:
            logger.warning("train config %s failed: %s", config.name, e)
            failures.append(f"{config.name}: {e}")
            continue
        results[config.name] = result
        rows.append(_row(config, result, results.get("eager"), dtype))

    columns = [
        "config",
        "attn",
        "ckpt",
        "dtype",
        "threads",
        "samples/s",
        "tokens/s",
        "s/step",
        "median s/step",
        "video encoding",
        "peak MiB",
        "added MiB",
        "vs eager",
    ]
    frames = [s.num_frames for s in shapes]
    lines = [
        f"Workload: {steps} timed steps (+{args.warmup_steps} warm-up) of {args.batch_size} samples; {min(frames)}-"
        f"{max(frames)} frames, conversations of {args.prompt_tokens[0] + args.answer_tokens[0]}-"
        f"{args.prompt_tokens[1] + args.answer_tokens[1]} tokens with `<vid>` src and tgt; {args.geometry} geometry, "
        f"random weights, stage-3 trainables ({next(iter(results.values()))['trainable_params'] / 1e6:.2f}M "
        f"parameters, LoRA rank {common['lora_rank']})."
        if results
        else "Workload: no configuration finished.",
        "",
        format_table(columns, rows),
        "",
        "tokens/s counts LLM sequence tokens (text plus one per frame); peak MiB as in the infer scenario (CPU: VmHWM "
        "reset after warm-up; CUDA: max_memory_allocated); video encoding = share of the step in the forward of the "
        "vision tower and compressor (`encode_videos`); vs eager = ratio of median step times; "
        "added MiB = peak minus the memory in use before the timed "
        "steps (model, optimizer state, prepared batches).",
        "",
    ]
    lines += _targets(results)
    lines += [f"- FAILED {f}" for f in failures]
    return "\n".join(lines)


def _row(config: TrainConfig, result: dict, eager: dict | None, dtype: str) -> dict:
    row = {
        "config": config.name,
        "attn": config.attn,
        "ckpt": "yes" if config.gradient_checkpointing else "no",
        "dtype": dtype,
        "threads": result["torch_threads"],
        "samples/s": result["samples"] / result["wall"],
        "tokens/s": result["tokens"] / result["wall"],
        "s/step": result["wall"] / max(1, result["steps"]),
        "median s/step": _median_step(result),
        "video encoding": f"{result['encode_seconds'] / result['wall']:.0%}",
        "peak MiB": result["memory"]["peak_mib"],
        "added MiB": result["memory"]["peak_mib"] - result["memory"]["start_mib"],
    }
    if eager is not None:
        row["vs eager"] = _median_step(eager) / _median_step(result)
    return row


def _median_step(result: dict) -> float:
    # The median resists the bursts of a shared machine better than the mean.
    return statistics.median(result["step_seconds"])


def _targets(results: dict) -> list[str]:
    eager, sdpa = results.get("eager"), results.get("sdpa")
    if eager is None or sdpa is None:
        return [
            "- Target (sdpa step >= 1.5x eager, lower peak memory): not measured (needs the eager and sdpa configs)"
        ]
    speedup = _median_step(eager) / _median_step(sdpa)
    eager_mib, sdpa_mib = eager["memory"]["peak_mib"], sdpa["memory"]["peak_mib"]
    met = speedup >= TARGET_SPEEDUP and sdpa_mib < eager_mib
    return [
        f"- Target: sdpa training step >= {TARGET_SPEEDUP:g}x eager with lower peak memory: {speedup:.2f}x, "
        f"{sdpa_mib:.0f} vs {eager_mib:.0f} MiB -> {'MET' if met else 'NOT MET'}"
    ]
