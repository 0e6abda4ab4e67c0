"""E.T. Bench inference (SPEC 8), resumable, sharded and batched.

    python -m etchat.eval.infer_etbench --anno_path data/etbench/annotations/vid --data_path data/etbench/videos \
        --pred_path work_dirs/etchat-stage-3/etbench --model_path work_dirs/etchat-stage-3 [--chunk k --index i]

The defaults are the published protocol: phi3 prompt ``<image>\\n{q}`` with an open assistant turn; for RAR, ECA and
RVQ the prompt goes on with ``Best Option: (`` and a repetition penalty of 1.2 (sparing ``<vid>``) applies; sampling
at temperature 0.2 (top-k 50), at most 2048 new tokens, stop at ``<|end|>``. Each ``<vid>`` of an answer is written as
its matched frame index. Shard ``i`` of ``k`` answers samples ``i::k`` into ``etbench_{i}.json`` (``etbench.json``
for one shard), each sample keeping its fields plus the answer ``a``.

Answers are journalled as they come (see ``etchat.eval.io``) and a rerun skips the samples already answered. A sample
whose video cannot be read, or whose generation fails, gets an ``error`` field and an empty ``a``; the run goes on
(a rerun retries it). Videos are decoded ahead by ``--num_workers`` worker processes and ``--batch_size`` samples are
generated together; under ``--greedy`` a batch gives the answers of batch size 1. With ``--seed`` each batch draws
from a generator seeded by the seed and its first sample's key, so with batch size 1 an answer does not depend on
sharding or resuming.

The generic part (``Job``, ``run_jobs``, ``add_common_args``, ``setup``) is shared with ``infer_charades``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from etchat.constants import VIDEO_PLACEHOLDER
from etchat.data.conversation import get_conv
from etchat.data.tokenization import tokenize
from etchat.data.transforms import build_transform
from etchat.data.video import load_video
from etchat.eval.io import ResultStore, shard
from etchat.model.generation import GenerationRequest, GenerationSettings, MatchedAnswer, generate

logger = logging.getLogger(__name__)

BEST_OPTION_TASKS = ("rar", "eca", "rvq")
BEST_OPTION_PROMPT = "Best Option: ("
BEST_OPTION_PENALTY = 1.2
REQUIRED_FIELDS = ("idx", "task", "source", "video", "q")
# Fields this script writes; dropped from an input sample so an old answer or error never survives a new one.
OUTPUT_FIELDS = ("a", "error", "sims", "frame_times", "match_times")
SIM_DECIMALS = 4
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


# --------------------------------------------------------------------------------------------------------------------
# Generic batched, resumable inference (shared with infer_charades)
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Job:
    """One sample to answer: its stable key, the record it extends, and what the model is given."""

    key: str
    sample: dict
    video_path: str
    prompt: str
    query: str  # Q-Former instruction
    src: list | None = None
    repetition_penalty: float | None = None


@dataclass
class LoadedJob:
    job: Job
    video: torch.Tensor | None = None  # transformed frames (T, 3, H, W) in the model dtype
    tags: list[float] | None = None
    duration: float | None = None
    error: str | None = None


class JobVideos(Dataset):
    """Decodes and transforms each job's video (in DataLoader workers); a failure is returned, not raised."""

    def __init__(self, jobs: list[Job], transform: Callable, dtype: torch.dtype, fps: float = 1.0):
        self.jobs, self.transform, self.dtype, self.fps = jobs, transform, dtype, fps

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> LoadedJob:
        job = self.jobs[i]
        try:
            clip = load_video(job.video_path, fps=self.fps, num_threads=1)
            return LoadedJob(job, self.transform(clip.frames).to(self.dtype), clip.tags, clip.duration)
        except Exception as error:  # any unreadable video becomes that sample's error record
            return LoadedJob(job, error=f"{type(error).__name__}: {error}")


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def make_generator(device: torch.device, seed: int | None, key: str) -> torch.Generator | None:
    """A generator seeded from ``seed`` and a sample key, so a sample's draw does not depend on what ran before."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed((seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
    return generator


def _generate(model, tokenizer, items: list[LoadedJob], settings: GenerationSettings, seed) -> list[MatchedAnswer]:
    requests = [
        GenerationRequest(
            input_ids=tokenize(item.job.prompt, tokenizer),
            video=item.video,
            query=item.job.query,
            src=item.job.src,
            tags=item.tags,
        )
        for item in items
    ]
    generator = make_generator(model.device, seed, items[0].job.key) if settings.do_sample else None
    return generate(model, tokenizer, requests, settings, generator=generator)


def answer_batch(
    model, tokenizer, items: list[LoadedJob], settings: GenerationSettings, seed: int | None
) -> list[tuple[MatchedAnswer | None, str | None]]:
    """(answer, error) per item. A failing batch is retried one sample at a time so only the culprit fails."""
    try:
        return [(answer, None) for answer in _generate(model, tokenizer, items, settings, seed)]
    except Exception as error:  # one bad sample (or an out-of-memory batch) must not stop the run
        if model.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(items) == 1:
            logger.exception("Generation failed on %s", items[0].job.key)
            return [(None, describe_error(error))]
        logger.warning("A batch of %d failed (%s); answering its samples one by one", len(items), error)
        return [result for item in items for result in answer_batch(model, tokenizer, [item], settings, seed)]


def error_record(job: Job, error: str) -> dict:
    return {**_input_fields(job.sample), "a": "", "error": error}


def _input_fields(sample: dict) -> dict:
    return {k: v for k, v in sample.items() if k not in OUTPUT_FIELDS}


def match_fields(answer: MatchedAnswer, tags: list[float]) -> dict:
    """The `<vid>` similarity curves, frame times and matched times, for plotting (``--save_sims``)."""
    return {
        "sims": [[round(float(x), SIM_DECIMALS) for x in sim.tolist()] for sim in answer.similarities],
        "frame_times": list(tags),
        "match_times": list(answer.times),
    }


RecordFn = Callable[[Job, MatchedAnswer, LoadedJob], dict]
ErrorFn = Callable[[Job, str], dict]


def run_jobs(
    model,
    tokenizer,
    jobs: list[Job],
    store: ResultStore,
    settings: GenerationSettings,
    to_record: RecordFn,
    to_error: ErrorFn = error_record,
    batch_size: int = 1,
    num_workers: int = 0,
    seed: int | None = 0,
    desc: str = "inference",
) -> dict[str, dict]:
    """Answer ``jobs``, journalling each record as it is made; returns key -> record.

    ``to_record(job, answer, loaded)`` builds a sample's record, ``to_error(job, message)`` the record of a sample
    that failed (unreadable video, generation error).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    dtype = next(model.parameters()).dtype
    transform = build_transform(model.config.vision_processor, inference=True)
    loader = DataLoader(
        JobVideos(jobs, transform, dtype),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=list,
        prefetch_factor=2 if num_workers > 0 else None,
    )
    records: dict[str, dict] = {}
    with tqdm(total=len(jobs), unit="sample", desc=desc, dynamic_ncols=True) as bar:
        for batch in loader:
            for record in _answer_loaded(model, tokenizer, batch, settings, to_record, to_error, seed):
                store.append(record)
                records[store.key_fn(record)] = record
                bar.update(1)
            bar.set_postfix(errors=sum("error" in r for r in records.values()))
    return records


def _answer_loaded(model, tokenizer, batch: list[LoadedJob], settings, to_record, to_error, seed) -> list[dict]:
    """Records of a loaded batch, in batch order; samples needing other settings are generated apart."""
    results: dict[int, dict] = {}
    for position, item in enumerate(batch):
        if item.error is not None:
            logger.warning("%s: %s", item.job.key, item.error)
            results[position] = to_error(item.job, item.error)
    groups: dict[float | None, list[int]] = {}
    for position, item in enumerate(batch):
        if item.error is None:
            groups.setdefault(item.job.repetition_penalty, []).append(position)
    for penalty, positions in groups.items():
        items = [batch[p] for p in positions]
        group_settings = replace(settings, repetition_penalty=penalty)
        for position, (answer, error) in zip(positions, answer_batch(model, tokenizer, items, group_settings, seed)):
            job = batch[position].job
            results[position] = to_error(job, error) if error else to_record(job, answer, batch[position])
    return [results[p] for p in range(len(batch))]


def base_settings(model, max_new_tokens: int = 2048, greedy: bool = False) -> GenerationSettings:
    """The published decoding: sampling at temperature 0.2 (top-k 50), stop at the template's end string or EOS."""
    eos = model.generation_config.eos_token_id
    eos = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
    stop = get_conv(conv_type(model)).stop_str
    return GenerationSettings(
        max_new_tokens=max_new_tokens,
        do_sample=not greedy,
        temperature=0.2,
        top_k=50,
        stop_strings=(stop,),
        eos_token_ids=eos,
    )


def conv_type(model) -> str:
    return getattr(model.config, "conv_type", None) or "phi3"


def build_prompt(question: str, conv_name: str = "phi3", best_option: bool = False) -> str:
    """The chat prompt for one video question, with an open assistant turn (and the Best Option prefix)."""
    conv = get_conv(conv_name)
    conv.append_message(conv.roles[0], VIDEO_PLACEHOLDER + "\n" + question)
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    if best_option:
        prompt += BEST_OPTION_PROMPT if prompt.endswith("\n") else " " + BEST_OPTION_PROMPT
    return prompt


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--anno_path", required=True)
    parser.add_argument("--data_path", required=True, help="video root folder")
    parser.add_argument("--pred_path", required=True, help="output folder")
    parser.add_argument("--model_path", required=True, help="E.T. Chat checkpoint folder")
    parser.add_argument("--chunk", type=int, default=1, help="number of shards (processes)")
    parser.add_argument("--index", type=int, default=0, help="shard of this process, 0 <= index < chunk")
    parser.add_argument("--batch_size", type=int, default=1, help="samples generated together")
    parser.add_argument("--num_workers", type=int, default=2, help="video decoding worker processes (0: in-process)")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of the published sampling")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (per batch, from its first sample)")
    parser.add_argument("--max_new_tokens", type=int, default=2048)
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=("auto", *DTYPES), default="auto", help="auto: float16 on GPU, else float32")
    parser.add_argument("--save_sims", action="store_true", help="store the <vid> similarity curves for --plot")
    parser.add_argument("--plot", type=int, default=0, metavar="N", help="draw timelines of the first N samples")
    parser.add_argument("--verbose", action="store_true", help="log every prompt and answer")


def setup(args: argparse.Namespace) -> None:
    """Logging with the shard in every line; checks of the shard options."""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s [shard {args.index}/{args.chunk}] %(levelname)s %(name)s: %(message)s",
    )
    shard([], args.chunk, args.index)  # validates chunk / index


def load_model(args: argparse.Namespace):
    from etchat.model.loading import load_etchat

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = args.dtype
    if dtype == "auto":
        dtype = "float16" if torch.device(device).type == "cuda" else "float32"
    logger.info("Loading %s on %s (%s)", args.model_path, device, dtype)
    model, tokenizer = load_etchat(args.model_path, dtype=DTYPES[dtype], device=device)
    return model.eval(), tokenizer


def collect(store: ResultStore, chunk: int, keys: list[str], done: dict, new: dict) -> list[dict]:
    """Final records of the shard in input order; logs the errors and any stale output of another layout."""
    records = [new[k] if k in new else done[k] for k in keys]
    errors = [r for r in records if "error" in r]
    if errors:
        logger.warning("%d of %d samples failed (field 'error'); a rerun retries them", len(errors), len(records))
    for path in store.stale_outputs(chunk):
        logger.warning("%s is from a run with another number of shards; remove it before scoring the folder", path)
    return records


# --------------------------------------------------------------------------------------------------------------------
# E.T. Bench
# --------------------------------------------------------------------------------------------------------------------


def load_annotations(path: str | os.PathLike) -> list[dict]:
    """Samples of an annotation file, or of every ``*.json`` in a folder (sorted by name), checked for their fields."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if not files:
            raise FileNotFoundError(f"no .json annotation files in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"annotation file or folder not found: {path}")
    samples = []
    for file in files:
        samples.extend(_read_annotation_file(file))
    _check_unique_keys(samples)
    return samples


def _read_annotation_file(path: Path) -> list[dict]:
    try:
        samples = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(samples, list):
        raise ValueError(f"{path}: expected a list of samples, got {type(samples).__name__}")
    for position, sample in enumerate(samples):
        missing = [k for k in REQUIRED_FIELDS if not isinstance(sample, dict) or k not in sample]
        if missing:
            raise ValueError(f"{path}: sample #{position} lacks {', '.join(missing)}")
    return samples


def sample_key(sample: dict) -> str:
    """Stable name of a benchmark sample across runs: task/source/idx."""
    return f"{sample['task']}/{sample['source']}/{sample['idx']}"


def _check_unique_keys(samples: list[dict]) -> None:
    seen = set()
    for sample in samples:
        key = sample_key(sample)
        if key in seen:
            raise ValueError(f"two annotation samples share task/source/idx {key}; resuming needs unique keys")
        seen.add(key)


def etbench_job(sample: dict, data_path: str, conv_name: str = "phi3") -> Job:
    best_option = sample["task"] in BEST_OPTION_TASKS
    return Job(
        key=sample_key(sample),
        sample=sample,
        video_path=os.path.join(data_path, sample["video"]),
        prompt=build_prompt(sample["q"], conv_name, best_option),
        query=sample["q"],
        src=sample.get("src"),
        repetition_penalty=BEST_OPTION_PENALTY if best_option else None,
    )


def etbench_record_fn(save_sims: bool, verbose: bool = False) -> RecordFn:
    def to_record(job: Job, answer: MatchedAnswer, loaded: LoadedJob) -> dict:
        record = {**_input_fields(job.sample), "a": answer.text}
        if save_sims:
            record.update(match_fields(answer, loaded.tags))
        if verbose:
            logger.info("%s\n%s\n-> %s", job.key, job.prompt, answer.text)
        return record

    return to_record


def run_etbench(args: argparse.Namespace, model, tokenizer) -> list[dict]:
    """Answer shard ``args.index`` of ``args.chunk``; returns and writes its records."""
    samples = shard(load_annotations(args.anno_path), args.chunk, args.index)
    store = ResultStore(args.pred_path, "etbench", args.chunk, args.index, sample_key)
    done = store.load()
    conv_name = conv_type(model)
    jobs = [etbench_job(s, args.data_path, conv_name) for s in samples if sample_key(s) not in done]
    logger.info("%d samples in this shard, %d to answer", len(samples), len(jobs))
    new = run_jobs(
        model,
        tokenizer,
        jobs,
        store,
        base_settings(model, args.max_new_tokens, args.greedy),
        etbench_record_fn(args.save_sims, args.verbose),
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
        desc=f"E.T. Bench {args.index}/{args.chunk}",
    )
    records = collect(store, args.chunk, [sample_key(s) for s in samples], done, new)
    store.write_final(records)
    if args.plot:
        from etchat.eval.plot import plot_records

        plot_records(records[: args.plot], Path(args.pred_path) / "plots", data_path=args.data_path)
    return records


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    setup(args)
    model, tokenizer = load_model(args)
    return run_etbench(args, model, tokenizer)


if __name__ == "__main__":
    main()
