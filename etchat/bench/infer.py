"""`infer` scenario: E.T.-Bench-shaped inference, the published approach against ours.

Published approach: one sample at a time, eager attention, the video decoded by decord with one thread in the main
process and transformed the published way (`etchat.bench.published`). Ours: batched `generate` over a list of
requests, sdpa, videos decoded (by the project's reader) and transformed (by the project's transform) ahead in
DataLoader worker processes, batches formed from samples of similar length (frame counts are known from the
annotations before decoding).

On CPU all configurations use the same number of torch threads (see `default_configs`).

Answers are greedy with EOS and stop strings disabled, `max_new_tokens` = the batch's longest drawn answer length, so
every configuration does the same work; a batch keeps computing its finished samples, which is charged to it.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass

import torch
from torch.utils.data import DataLoader, Dataset

from etchat.bench.etbench import etbench_frame_counts, project_minutes
from etchat.bench.measure import (
    PeakMemory,
    StageTimer,
    attach_stage_timers,
    detach_stage_timers,
)
from etchat.bench.models import build_model
from etchat.bench.published import published_transform
from etchat.bench.report import format_table
from etchat.bench.workload import SampleShape, build_prompt_ids, draw_shapes, ensure_videos
from etchat.data.transforms import build_transform
from etchat.data.video import decord_available, load_video
from etchat.model.generation import GenerationRequest, GenerationSettings, generate

logger = logging.getLogger(__name__)

STAGES = ("decode", "vision", "compressor", "prefill", "generation")
TARGET_SPEEDUP = 3.0


@dataclass
class InferConfig:
    name: str
    batch_size: int = 1
    attn: str = "eager"
    dtype: str = "float32"
    num_workers: int = 0  # 0: decode in the main process, before each batch
    sort_by_length: bool = False
    threads: int | None = None  # torch intra-op threads of the model process; None: torch's default (all cores)
    published_io: bool = False  # decode with decord and transform as the published code does


def flash_attention_available() -> bool:
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return False
    return True


def default_configs(device_type: str, batch_size: int, num_workers: int | None, cores: int) -> list[InferConfig]:
    """The published baseline, one change at a time, then ours (and its other dtypes / attention kernels).

    On CPU every configuration gets the torch threads left over by ours' decode workers: equal threads keep the
    comparison about batching, attention and workers, and ours' workers and model threads do not oversubscribe the
    cores (an OpenMP thread waiting on a descheduled sibling makes every op slow, which would flatter ours).
    """
    if device_type == "cuda":
        half, threads = "float16", None  # the published run is float16 on GPU
        workers = num_workers if num_workers is not None else min(8, cores)
    else:
        half = "float32"
        workers = num_workers if num_workers is not None else max(1, cores // 2)
        threads = max(1, cores - workers)
    configs = [
        InferConfig("published", 1, "eager", half, threads=threads, published_io=True),
        InferConfig("b1-sdpa", 1, "sdpa", half, threads=threads, published_io=True),
        InferConfig(f"b{batch_size}-eager", batch_size, "eager", half, threads=threads, published_io=True),
        InferConfig("ours", batch_size, "sdpa", half, workers, sort_by_length=True, threads=threads),
        InferConfig("ours-bf16", batch_size, "sdpa", "bfloat16", workers, sort_by_length=True, threads=threads),
    ]
    if device_type == "cuda" and flash_attention_available():
        configs.append(InferConfig("ours-fa2", batch_size, "flash_attention_2", "bfloat16", workers, True))
    return configs


# ---- one configuration (runs in its own process) -------------------------------------------------------------------
class VideoRequests(Dataset):
    """Sample i -> GenerationRequest with its decoded, transformed video (what a DataLoader worker produces)."""

    def __init__(self, shapes: list[SampleShape], prompts: list[tuple[torch.Tensor, str]], backend: str, transform):
        self.shapes, self.prompts, self.backend, self.transform = shapes, prompts, backend, transform

    def __len__(self) -> int:
        return len(self.shapes)

    def __getitem__(self, i: int) -> GenerationRequest:
        shape = self.shapes[i]
        # One decoding thread per video, as published; parallelism, where any, comes from the workers.
        clip = load_video(shape.video, fps=1.0, num_threads=1, backend=self.backend)
        input_ids, question = self.prompts[i]
        return GenerationRequest(input_ids, self.transform(clip.frames), question, shape.src or None, clip.tags)


def make_batches(shapes: list[SampleShape], batch_size: int, sort_by_length: bool) -> list[list[int]]:
    order = list(range(len(shapes)))
    if sort_by_length:
        order.sort(key=lambda i: shapes[i].num_frames + shapes[i].prompt_tokens)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def greedy_settings(max_new_tokens: int) -> GenerationSettings:
    return GenerationSettings(max_new_tokens=max_new_tokens, do_sample=False, stop_strings=(), eos_token_ids=())


def _batches_of_requests(dataset, batches, num_workers, device, timer):
    """Yield the requests of each batch; time spent waiting for them is charged to `decode`.

    Workers load single samples (not whole batches), so `num_workers` videos decode at once, and enough are
    prefetched that the next batch is being decoded while the current one runs on the model.
    """
    if num_workers == 0:
        for batch in batches:
            with timer.stage("decode"):
                requests = [dataset[i] for i in batch]
            yield batch, requests
        return
    order = [i for batch in batches for i in batch]
    per_worker = -(-max(len(b) for b in batches) // num_workers)
    loader = DataLoader(
        dataset,
        sampler=order,
        batch_size=None,
        num_workers=num_workers,
        pin_memory=torch.device(device).type == "cuda",
        prefetch_factor=2 * per_worker,
    )
    samples = iter(loader)
    for batch in batches:
        with timer.stage("decode"):
            requests = [next(samples) for _ in batch]
        yield batch, requests


def _warm_up(model, tokenizer, seed: int) -> None:
    prompt, question = build_prompt_ids(SampleShape(-1, 4, 60, 2, []), tokenizer, seed)
    generate(model, tokenizer, [GenerationRequest(prompt, torch.randn(4, 3, 224, 224), question)], greedy_settings(2))


def run_config(config: dict) -> dict:
    """Run one InferConfig over the workload described in `config`; return throughput, memory and stage split."""
    device = config["device"]
    if config["threads"]:
        torch.set_num_threads(config["threads"])
    model, tokenizer = build_model(config["geometry"], config["attn"], config["dtype"], device, config["seed"])
    shapes = [SampleShape(**s) for s in config["shapes"]]
    prompts = [build_prompt_ids(s, tokenizer, config["seed"]) for s in shapes]
    if config["published_io"]:
        transform, backend = published_transform, "decord" if decord_available() else config["backend"]
    else:
        transform, backend = build_transform("clip_center_224", inference=True), config["backend"]
    dataset = VideoRequests(shapes, prompts, backend, transform)
    batches = make_batches(shapes, config["batch_size"], config["sort_by_length"])
    _warm_up(model, tokenizer, config["seed"])

    timer, memory = StageTimer(device), PeakMemory(device)
    memory.reset()
    handles = attach_stage_timers(model, timer)
    generated_steps = 0
    start = time.perf_counter()
    for batch, requests in _batches_of_requests(dataset, batches, config["num_workers"], device, timer):
        max_new = max(shapes[i].answer_tokens for i in batch)
        with timer.stage("generate"):
            answers = generate(model, tokenizer, requests, greedy_settings(max_new))
        generated_steps += max_new * len(batch)
        if any(len(a.token_ids) != max_new for a in answers):
            raise RuntimeError(f"{config['name']}: an answer stopped before {max_new} tokens; EOS was not disabled")
    wall = time.perf_counter() - start
    detach_stage_timers(handles)

    stages = dict(timer.seconds)
    encode = stages.pop("encode")
    stages["vision"] = encode - stages["compressor"]  # the pixels' gathering and transfer count as vision
    stages["generation"] = stages.pop("generate") - encode - stages["prefill"]
    stages["other"] = wall - sum(stages.get(s, 0.0) for s in STAGES)
    return {
        "wall": wall,
        "samples": len(shapes),
        "frames": sum(s.num_frames for s in shapes),
        "prompt_tokens": sum(int((ids >= 0).sum()) for ids, _ in prompts),
        "answer_tokens": sum(s.answer_tokens for s in shapes),
        "generated_steps": generated_steps,
        "stages": stages,
        "memory": memory.read(),
        "torch_threads": torch.get_num_threads(),
    }


# ---- the scenario --------------------------------------------------------------------------------------------------
def add_arguments(parser) -> None:
    parser.add_argument("--samples", type=int, help="number of samples (default 12 tiny, 64 full)")
    parser.add_argument("--batch_size", type=int, default=8, help="batch size of the batched configurations")
    parser.add_argument(
        "--workers", type=int, help="DataLoader workers of ours (default: half the cores on CPU, up to 8 on GPU)"
    )
    parser.add_argument("--frames", type=int, nargs=2, default=(30, 300), metavar=("MIN", "MAX"))
    parser.add_argument("--prompt_tokens", type=int, nargs=2, default=(100, 200), metavar=("MIN", "MAX"))
    parser.add_argument("--answer_tokens", type=int, nargs=2, default=(20, 60), metavar=("MIN", "MAX"))
    parser.add_argument("--backend", default="auto", choices=("auto", "decord", "pyav"), help="video reader")
    parser.add_argument("--etbench_anno", help="E.T. Bench annotation file/folder for the projection's frame counts")


def _config_dicts(args, shapes) -> list[dict]:
    configs = default_configs(torch.device(args.device).type, args.batch_size, args.workers, os.cpu_count() or 1)
    if args.configs:
        wanted = args.configs.split(",")
        unknown = set(wanted) - {c.name for c in configs}
        if unknown:
            raise SystemExit(f"Unknown infer configs {sorted(unknown)}; choose from {[c.name for c in configs]}")
        configs = [c for c in configs if c.name in wanted]
    if args.torch_threads:
        for config in configs:
            config.threads = args.torch_threads
    common = dict(
        device=args.device,
        geometry=args.geometry,
        seed=args.seed,
        backend=args.backend,
        shapes=[s.to_dict() for s in shapes],
    )
    return [dict(common, **asdict(c)) for c in configs]


def _row(config: dict, result: dict, baseline: dict | None) -> dict:
    stages = result["stages"]
    decode = f"{config['num_workers']} workers" if config["num_workers"] else "main"
    row = {
        "config": config["name"],
        "batch": config["batch_size"],
        "attn": config["attn"],
        "dtype": config["dtype"],
        "decode in": decode,
        "threads": result["torch_threads"],
        "samples/s": result["samples"] / result["wall"],
        "frames/s": result["frames"] / result["wall"],
        "tokens/s": result["answer_tokens"] / result["wall"],
        "peak MiB": result["memory"]["peak_mib"],
        "added MiB": result["memory"]["peak_mib"] - result["memory"]["start_mib"],
        "wall s": result["wall"],
    }
    row.update({f"{s} s": stages.get(s, 0.0) for s in (*STAGES, "other")})
    if baseline is not None:
        row["speedup"] = baseline["wall"] / result["wall"]
    return row


def run(args, run_one) -> str:
    """Run every configuration through `run_one(target, config)`; return the report body (table and targets)."""
    is_tiny = args.geometry == "tiny"
    samples = args.samples or (12 if is_tiny else 64)
    shapes = draw_shapes(samples, tuple(args.frames), tuple(args.prompt_tokens), tuple(args.answer_tokens), args.seed)
    ensure_videos(shapes, args.video_dir, args.video_fps, args.video_size)

    rows, results, failures = [], {}, []
    for config in _config_dicts(args, shapes):
        logger.info("infer: running %s", config["name"])
        try:
            result = run_one("etchat.bench.infer:run_config", config)
        except Exception as e:  # one failing configuration (e.g. bf16 on an old CPU) must not hide the others
            logger.warning("infer config %s failed: %s", config["name"], e)
            failures.append(f"{config['name']}: {e}")
            continue
        results[config["name"]] = result
        rows.append(_row(config, result, results.get("published")))

    columns = [
        "config",
        "batch",
        "attn",
        "dtype",
        "decode in",
        "threads",
        "samples/s",
        "frames/s",
        "tokens/s",
        "peak MiB",
        "added MiB",
    ]
    columns += [f"{s} s" for s in (*STAGES, "other")] + ["wall s", "speedup"]
    lines = [
        _describe_workload(args, shapes),
        "",
        format_table(columns, rows),
        "",
        "Stage seconds are wall time inside the run (decode = time the model waited for videos); speedup = published "
        "wall time / this one's; peak MiB = " + _memory_note(args.device, results),
        "",
    ]
    lines += _targets(results)
    lines += _projection(args, results)
    lines += [f"- FAILED {f}" for f in failures]
    return "\n".join(lines)


def _describe_workload(args, shapes) -> str:
    frames = [s.num_frames for s in shapes]
    return (
        f"Workload: {len(shapes)} samples, {min(frames)}-{max(frames)} frames at 1 fps "
        f"(mean {sum(frames) / len(frames):.0f}), "
        f"prompts {args.prompt_tokens[0]}-{args.prompt_tokens[1]} tokens, answers {args.answer_tokens[0]}-"
        f"{args.answer_tokens[1]} tokens (greedy, EOS disabled); {args.geometry} geometry, random weights; videos "
        f"H.264 at {args.video_fps:g} fps, short side {args.video_size} px, "
        f"reader {args.backend} for ours, decord and the published transform for the batch-1 and eager rows."
    )


def _memory_note(device: str, results: dict) -> str:
    if torch.device(device).type == "cuda":
        return "torch.cuda.max_memory_allocated during the run."
    resets = all(r["memory"]["peak_reset"] for r in results.values()) if results else True
    note = "the process's resident-set high-water mark (VmHWM) "
    note += "reset after model building and warm-up" if resets else "over the whole process (could not be reset)"
    return (
        note + "; DataLoader workers are separate processes, not included. added MiB = peak minus the memory in use "
        "when the measured run started (model and prompts)."
    )


def _model_seconds(result: dict) -> float:
    return result["wall"] - result["stages"].get("decode", 0.0)


def _targets(results: dict) -> list[str]:
    baseline, ours = results.get("published"), results.get("ours")
    if baseline is None or ours is None:
        return ["- Target (batched >= 3x published samples/s): not measured (needs the published and ours configs)"]
    lines = []
    speedup = baseline["wall"] / ours["wall"]
    verdict = "MET" if speedup >= TARGET_SPEEDUP else "NOT MET"
    lines.append(
        f"- Target: ours >= {TARGET_SPEEDUP:g}x the samples/s of the published approach: {speedup:.2f}x -> {verdict}"
    )
    # Amdahl: what batching and attention can change is the time not spent waiting for videos.
    decode_share = baseline["stages"].get("decode", 0.0) / baseline["wall"]
    model_speedup = _model_seconds(baseline) / max(_model_seconds(ours), 1e-9)
    lines.append(
        f"- Where the time goes: the published run waits for video decoding {decode_share:.0%} of its wall time; "
        f"excluding that wait, ours is {model_speedup:.2f}x the published model time (vision, compressor, prefill, "
        "generation)."
    )
    if baseline["torch_threads"] != ours["torch_threads"]:
        lines.append(
            f"- Caution: published ran with {baseline['torch_threads']} torch threads, ours with "
            f"{ours['torch_threads']}; on a loaded machine thread counts change the ratio."
        )
    return lines


def _projection(args, results: dict) -> list[str]:
    if not results:
        return []
    num_samples, total_frames, source = etbench_frame_counts(args.etbench_anno)
    lines = [
        f"- Projected wall time of the full E.T. Bench ({num_samples} samples, {total_frames} frames at 1 fps from "
        f"{source}; answers as in this workload) on this machine, {args.geometry} geometry:"
    ]
    for name, result in results.items():
        minutes = project_minutes(result, num_samples, total_frames)
        lines.append(f"  - {name}: {minutes:.0f} min ({minutes / 60:.1f} h)")
    return lines
