"""Batched, resumable, sharded inference over any benchmark (docs/design.md §8).

A benchmark says what its samples are and what a record holds (`Benchmark`); the runner does the rest, the same way
for every benchmark:

* shard ``i`` of ``k`` answers samples ``i, i + k, i + 2k, ...`` and writes ``<stem>_{i}.json`` (``<stem>.json`` for
  one shard), each record keeping the sample's fields plus the answer;
* every record is journalled as it is produced (``etchat.eval.results``) and a rerun skips the samples already
  answered;
* a sample whose video cannot be read, or whose generation fails, gets an ``error`` field and the run goes on (a
  rerun retries it);
* videos are decoded ahead by ``--workers`` worker processes and ``--batch_size`` samples are generated together;
  under ``--greedy`` a batch gives the answers of batch size 1; with ``--seed`` each batch draws from a generator
  seeded by the seed and its first sample's key, so with batch size 1 an answer does not depend on sharding or
  resuming;
* decoding is the published one (`etchat.model.generation.published_settings`);
* a sample whose times (`src`, `tgt`, ...) are not finite or fall outside its video, or whose prompt and frames do not
  fit the model's context, is a per-sample error naming it; an annotated duration more than a second off the video's
  is a warning;
* samples the annotation checks reject (`etchat.data.sample_checks`: missing fields, `<vid>` counts that disagree
  with `src`, repeated keys) are skipped with a count and the first reasons (``--strict`` refuses instead);
* a shard with skipped or failed samples ends with a non-zero exit status and one line saying how many and why (its
  files are written all the same).

Annotations are read and checked before the model loads, so a bad file fails in a moment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from etchat.cli import (
    add_device_args,
    add_model_path_arg,
    add_old_spelling,
    resolve_device_dtype,
    setup_logging,
    shard_log_format,
)
from etchat.data.conversation import chat_prompt
from etchat.data.sample_checks import Problem, report_problems
from etchat.data.sample_checks import time_problem as sample_time_problem
from etchat.data.tokenization import tokenize
from etchat.data.transforms import build_transform
from etchat.data.video import load_video
from etchat.eval.results import INPUT_DIGEST, ResultStore, shard, shard_name
from etchat.eval.run_record import (
    DIGEST_CACHE_FILE,
    DigestCache,
    RunMismatchError,
    build_record,
    claim_run_folder,
    describe_loaded_model,
    describe_model,
    json_digest,
)
from etchat.hub import ModelNotFoundError
from etchat.io import remove_stale_temp_files, without_non_finite
from etchat.locking import FileLock, LockHeldError
from etchat.model.generation import (
    GenerationRequest,
    GenerationSettings,
    MatchedAnswer,
    generate,
    published_settings,
    seeded_generator,
)
from etchat.model.loading import CheckpointMismatchError, load_etchat

logger = logging.getLogger(__name__)

SIM_DECIMALS = 4
FPS = 1.0  # frames sampled per second of video: the published model reads seconds as frame indices
# Fields the runner itself adds to a record (with --save_sims).
MATCH_FIELDS = ("sims", "frame_times", "match_times")
# Annotated times and durations may differ from the decoded video by rounding; more than this is an error (times) or
# a warning (durations).
TIME_SLACK = 1.0
EXIT_FAILED_SAMPLES = 1
EXIT_BAD_INPUT = 2


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
    input_digest: str | None = None  # of what the answer depends on (`input_digest`), set by the runner


@dataclass
class LoadedJob:
    job: Job
    video: torch.Tensor | None = None  # transformed frames (T, 3, H, W) in the model dtype
    tags: list[float] | None = None
    duration: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class Benchmark:
    """What the runner needs to know about a benchmark.

    ``load_samples(anno_path)`` reads and checks the annotations: the usable samples, and the problems of those left
    out (`etchat.data.sample_checks`); ``sample_key(sample)`` names a sample stably across runs;
    ``video_path(sample, data_path)`` is its video file; ``build_job(sample, data_path, conv_name)`` makes its `Job`;
    ``to_record(job, answer, loaded)`` and ``to_error(job, message)`` make the record of an answered and of a failed
    sample; ``time_fields`` name the sample fields that hold times in seconds (checked against the video);
    ``answer_fields`` name the fields ``to_record`` / ``to_error`` add to the sample's (a rerun keeps them and takes
    every other field from the current annotations); ``prompt_texts`` are the fixed texts the benchmark builds its
    prompts from (their digest is part of the run record); ``answer_inputs`` name the sample fields a record's
    prediction depends on besides the prompt, the times and the video (e.g. a duration that sets the clip count).
    """

    name: str
    stem: str
    load_samples: Callable[[str], tuple[list[dict], list[Problem]]]
    sample_key: Callable[[dict], str]
    video_path: Callable[[dict, str], str]
    build_job: Callable[[dict, str, str], Job]
    to_record: Callable[[Job, MatchedAnswer, LoadedJob], dict]
    to_error: Callable[[Job, str], dict]
    time_fields: tuple[str, ...] = ("src", "tgt")
    answer_fields: tuple[str, ...] = ()
    prompt_texts: tuple[str, ...] = ()
    answer_inputs: tuple[str, ...] = ()


class JobVideos(Dataset):
    """Decodes and transforms each job's video (in DataLoader workers); a failure is returned, not raised."""

    def __init__(self, jobs: list[Job], transform: Callable, dtype: torch.dtype, fps: float = FPS):
        self.jobs, self.transform, self.dtype, self.fps = jobs, transform, dtype, fps

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, i: int) -> LoadedJob:
        job = self.jobs[i]
        try:
            clip = load_video(job.video_path, fps=self.fps, num_threads=1, short_side=self.transform.size)
            return LoadedJob(job, self.transform(clip.frames).to(self.dtype), clip.tags, clip.duration)
        except Exception as error:  # any unreadable video becomes that sample's error record
            return LoadedJob(job, error=describe_error(error))


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def match_fields(answer: MatchedAnswer, tags: list[float]) -> dict:
    """The `<vid>` similarity curves, frame times and matched times, for plotting (``--save_sims``)."""
    return {
        "sims": [[round(float(x), SIM_DECIMALS) for x in sim.tolist()] for sim in answer.similarities],
        "frame_times": list(tags),
        "match_times": list(answer.times),
    }


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
    generator = seeded_generator(model.device, seed, items[0].job.key) if settings.do_sample else None
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


RecordFn = Callable[[Job, MatchedAnswer, LoadedJob], dict]
ErrorFn = Callable[[Job, str], dict]


def run_jobs(
    model,
    tokenizer,
    jobs: list[Job],
    store: ResultStore,
    settings: GenerationSettings,
    to_record: RecordFn,
    to_error: ErrorFn,
    batch_size: int = 1,
    num_workers: int = 0,
    seed: int | None = 0,
    desc: str = "inference",
    time_fields: tuple[str, ...] = ("src", "tgt"),
) -> dict[str, dict]:
    """Answer ``jobs``, journalling each record as it is made; returns key -> record."""
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
            answered = _answer_loaded(model, tokenizer, batch, settings, to_record, to_error, seed, time_fields)
            for item, record in zip(batch, answered):
                store.append(record, item.job.input_digest)
                records[store.key_fn(record)] = record
                bar.update(1)
            bar.set_postfix(errors=sum("error" in r for r in records.values()))
    return records


def time_problem(sample: dict, fields: tuple[str, ...], duration: float) -> str | None:
    """Why the times of ``sample`` cannot be used with a video of ``duration`` seconds, or None (the checks of
    training and the data check, `etchat.data.sample_checks.time_problem`, against the decoded video)."""
    return sample_time_problem(sample, fields, duration=duration, slack=TIME_SLACK)


def context_problem(item: LoadedJob, tokenizer, context: int | None, answer_room: int = 0) -> str | None:
    """Why the prompt and frames of ``item``, plus ``answer_room`` tokens for the answer (``--max_new_tokens``), do
    not fit the model's context of ``context`` tokens, or None."""
    if not context:
        return None
    text_tokens = int((tokenize(item.job.prompt, tokenizer) >= 0).sum())
    length = text_tokens + item.video.size(0) + answer_room
    if length <= context:
        return None
    return (
        f"the prompt ({text_tokens} tokens), the video ({item.video.size(0)} frames) and the room for the answer "
        f"(--max_new_tokens {answer_room}) need {length} positions, more than the model's context of {context}"
    )


def _check_loaded(
    item: LoadedJob, tokenizer, context: int | None, time_fields: tuple[str, ...], answer_room: int = 0
) -> str | None:
    """The error of a loaded sample, or None; warns when its annotated duration is off the video's."""
    if item.error is not None:
        return item.error
    annotated = item.job.sample.get("duration")
    if isinstance(annotated, (int, float)) and abs(annotated - item.duration) > TIME_SLACK:
        logger.warning("%s: annotated duration %s s, but the video lasts %s s", item.job.key, annotated, item.duration)
    return time_problem(item.job.sample, time_fields, item.duration) or context_problem(
        item, tokenizer, context, answer_room
    )


def _answer_loaded(model, tokenizer, batch: list[LoadedJob], settings, to_record, to_error, seed, time_fields):
    """Records of a loaded batch, in batch order; samples needing other settings are generated apart."""
    results: dict[int, dict] = {}
    context = getattr(model.config, "max_position_embeddings", None)
    groups: dict[float | None, list[int]] = {}
    for position, item in enumerate(batch):
        error = _check_loaded(item, tokenizer, context, time_fields, settings.max_new_tokens)
        if error is not None:
            logger.warning("%s: %s", item.job.key, error)
            results[position] = to_error(item.job, error)
        else:
            groups.setdefault(item.job.repetition_penalty, []).append(position)
    for penalty, positions in groups.items():
        items = [batch[p] for p in positions]
        group_settings = replace(settings, repetition_penalty=penalty)
        for position, (answer, error) in zip(positions, answer_batch(model, tokenizer, items, group_settings, seed)):
            job = batch[position].job
            results[position] = to_error(job, error) if error else to_record(job, answer, batch[position])
    return [without_non_finite(results[p]) for p in range(len(batch))]


def input_digest(job: Job, data_path: str, fields: tuple[str, ...] = ()) -> str:
    """Digest of what the answer to ``job`` depends on besides the model and the settings: the prompt, the Q-Former
    instruction, the ``<vid>`` times and the video (its path under the video root and its size, so that a video
    replaced by another, e.g. a compressed copy, counts as changed), and the sample ``fields`` the prediction uses."""
    try:
        size = os.path.getsize(job.video_path)
    except OSError:
        size = None
    return json_digest(
        {
            "prompt": job.prompt,
            "query": job.query,
            "src": job.src,
            "repetition_penalty": job.repetition_penalty,
            "video": os.path.relpath(job.video_path, data_path),
            "video_bytes": size,
            "fields": {name: job.sample.get(name) for name in fields},
        }
    )


def refresh_record(old: dict, job: Job, answer_fields: tuple[str, ...]) -> dict:
    """An earlier answer of ``job`` with every other field taken from the current annotations (a corrected ground
    truth reaches the scorer without answering again)."""
    outputs = {*answer_fields, *MATCH_FIELDS}
    sample = {k: v for k, v in job.sample.items() if k not in outputs}
    return {**sample, **{k: v for k, v in old.items() if k in outputs}}


def reusable_answers(done: dict[str, dict], jobs: dict[str, Job], answer_fields: tuple[str, ...]) -> dict[str, dict]:
    """The journalled answers still valid for ``jobs``: those whose inputs digest is the job's; refreshed."""
    kept, changed = {}, []
    for key, job in jobs.items():
        old = done.get(key)
        if old is None:
            continue
        if old.get(INPUT_DIGEST) != job.input_digest:
            changed.append(key)
            continue
        kept[key] = refresh_record(old, job, answer_fields)
    if changed:
        logger.warning(
            "%d answered samples changed since they were answered (question, times or video; e.g. %s): answering "
            "them again",
            len(changed),
            changed[0],
        )
    return kept


def collect(store: ResultStore, chunk: int, keys: list[str], done: dict, new: dict) -> list[dict]:
    """Final records of the shard in input order; the final files of another shard layout are removed."""
    store.remove_other_layouts(chunk)
    return [new[k] if k in new else done[k] for k in keys]


def check_some_video_exists(paths: list[str], data_path: str) -> None:
    """Refuse annotations none of whose videos exists (a mistyped video root) before the model loads; a few missing
    videos are per-sample errors instead."""
    if paths and not any(Path(path).is_file() for path in paths):
        raise FileNotFoundError(f"none of the {len(paths)} videos is under --data_path {data_path} (e.g. {paths[0]})")


@dataclass
class ShardResult:
    records: list[dict]  # the shard's records, in annotation order
    skipped: list[Problem]  # annotation samples (of every shard) that could not be used


def failure_line(result: ShardResult) -> str | None:
    """One line saying how many samples were skipped or failed and why, or None when none was."""
    parts = []
    if result.skipped:
        count = len(result.skipped)
        parts.append(f"{count} annotation samples were skipped (see the warning): the predictions lack them")
    failed = [r for r in result.records if "error" in r]
    if failed:
        total = len(result.records)
        count = f"all {total}" if len(failed) == total else f"{len(failed)} of {total}"
        parts.append(f"{count} samples failed (first: {failed[0]['error']}); a rerun retries them")
    return "; ".join(parts) or None


# --------------------------------------------------------------------------------------------------------------------
# Command line (the same for every benchmark)
# --------------------------------------------------------------------------------------------------------------------


def build_parser(benchmark: Benchmark, description: str | None, prog: str | None = None) -> argparse.ArgumentParser:
    """The inference command of `benchmark`; `prog` is the command a user types (python -m etchat.eval.X.infer)."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--anno_path", required=True, help="annotation file (or folder of them)")
    parser.add_argument("--data_path", required=True, help="video root folder")
    parser.add_argument("--pred_path", required=True, help=f"folder the {benchmark.stem}*.json predictions go to")
    add_model_path_arg(parser)
    parser.add_argument("--chunk", type=int, default=1, help="number of shards (processes)")
    parser.add_argument("--index", type=int, default=0, help="shard of this process, 0 <= index < chunk")
    parser.add_argument("--batch_size", type=int, default=1, help="samples generated together")
    parser.add_argument(
        "--workers", type=int, default=2, help="video decoding worker processes (0: decode in the main process)"
    )
    add_old_spelling(parser, "--num_workers", "workers", type=int)
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of the published sampling")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (per batch, from its first sample)")
    parser.add_argument(
        "--max_new_tokens",
        type=int,
        default=GenerationSettings.max_new_tokens,
        help="longest answer; the prompt and the video must leave this much room in the model's context",
    )
    add_device_args(parser)
    parser.add_argument("--save_sims", action="store_true", help="store the <vid> similarity curves for plotting")
    parser.add_argument(
        "--plot_samples", type=int, default=0, metavar="N", help="draw timelines of the first N samples into plots/"
    )
    add_old_spelling(parser, "--plot", "plot_samples", type=int)
    parser.add_argument("--verbose", action="store_true", help="log every prompt and answer")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="refuse the annotations when a sample cannot be used (default: answer the others, then exit non-zero)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the answers of an earlier run in --pred_path made with another model or other settings "
        "(default: refuse; a run with the same ones resumes)",
    )
    parser.add_argument(
        "--check_complete",
        action="store_true",
        help="answer nothing; exit 0 when all --chunk shards are written for these annotations, else 1",
    )
    return parser


def setup(args: argparse.Namespace) -> None:
    """Logging with the shard in every line."""
    setup_logging(fmt=shard_log_format(args.index, args.chunk))


def check_options(args: argparse.Namespace) -> None:
    """Options that cannot work, refused before anything is read."""
    shard([], args.chunk, args.index)  # validates chunk / index
    if args.batch_size < 1:
        raise ValueError(f"--batch_size must be >= 1, got {args.batch_size}")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")


def load_model(args: argparse.Namespace):
    device, dtype = resolve_device_dtype(args.device, args.dtype)
    logger.info("Loading %s on %s (%s)", args.model_path, device, dtype)
    model, tokenizer = load_etchat(args.model_path, revision=args.model_revision, dtype=dtype, device=device)
    return model.eval(), tokenizer


def _record_fn(benchmark: Benchmark, save_sims: bool, verbose: bool) -> RecordFn:
    def to_record(job: Job, answer: MatchedAnswer, loaded: LoadedJob) -> dict:
        record = benchmark.to_record(job, answer, loaded)
        if save_sims:
            record.update(match_fields(answer, loaded.tags))
        if verbose:
            logger.info("%s\n%s\n-> %s", job.key, job.prompt, answer.text)
        return record

    return to_record


@dataclass
class RunPlan:
    """What a run is, known before its model loads: its record (run.json) and what building prompts needs."""

    record: dict
    conv_name: str
    digests: DigestCache | None


def decoding_settings(args: argparse.Namespace) -> dict:
    """The decoding an answer depends on. Under --greedy the sampling settings, the seed and the batch size change
    nothing (batched greedy answers equal those of batch size 1), so they are left out (null); under sampling each
    batch draws from a generator seeded by the seed and its first sample, so the batch size matters."""
    greedy = bool(args.greedy)
    default = GenerationSettings()
    return {
        "greedy": greedy,
        "temperature": None if greedy else default.temperature,
        "top_k": None if greedy else default.top_k,
        "top_p": None if greedy else default.top_p,
        "max_new_tokens": args.max_new_tokens,
        "repetition_penalty": default.repetition_penalty,
        "seed": None if greedy else args.seed,
        "batch_size": None if greedy else args.batch_size,
    }


def plan_run(benchmark: Benchmark, args: argparse.Namespace, model=None) -> RunPlan:
    """The run record of this run, from the model's files (resolved and digested, not loaded) or the given model."""
    if model is not None:
        entry, config = describe_loaded_model(model, args.model_path)
        device, dtype, digests = model.device.type, next(model.parameters()).dtype, None
    else:
        device, dtype = resolve_device_dtype(args.device, args.dtype)
        digests = DigestCache(Path(args.pred_path) / DIGEST_CACHE_FILE)
        entry, config = describe_model(args.model_path, args.model_revision, digests)
    conv_name = config.get("conv_type") or "phi3"
    vision_processor = config.get("vision_processor") or "clip_center_224"
    settings = {
        "decoding": decoding_settings(args),
        "video": {
            "fps": FPS,
            "min_frames": None,
            "max_frames": None,
            "frame_size": build_transform(vision_processor, inference=True).size,
            "vision_processor": vision_processor,
        },
        "prompts_digest": json_digest(
            {"template": chat_prompt([], "{question}", conv_name), "benchmark": list(benchmark.prompt_texts)}
        ),
        "dtype": str(dtype).removeprefix("torch."),
    }
    record = build_record(benchmark.stem, entry, settings, str(torch.device(device).type))
    return RunPlan(record, conv_name, digests)


def shard_lock(args: argparse.Namespace, stem: str) -> FileLock:
    name = shard_name(stem, args.chunk, args.index)
    return FileLock(Path(args.pred_path) / f".{name}.lock", f"shard {args.index} of {args.chunk} in {args.pred_path}")


def run(benchmark: Benchmark, args: argparse.Namespace, model=None, tokenizer=None) -> ShardResult:
    """Answer shard ``args.index`` of ``args.chunk`` of ``benchmark``; writes and returns its records. The model is
    loaded from ``args.model_path`` unless given (and only when something is left to answer).

    Before anything is answered, the run's record is compared with the folder's (`run_record.claim_run_folder`):
    answers made with another model or other settings are never reused, nor are those of a sample whose question,
    times or video changed since. A lock keeps a second process off the same shard.
    """
    every_sample, skipped = benchmark.load_samples(args.anno_path)
    # With no usable sample left there is nothing to answer: refuse, as --strict would.
    total = len(every_sample) + len(skipped)
    report_problems(skipped, total, f"{benchmark.name} samples", strict=args.strict or not every_sample)
    samples = shard(every_sample, args.chunk, args.index)
    # A mistyped video root fails here, before the model's files are resolved and hashed.
    check_some_video_exists([benchmark.video_path(s, args.data_path) for s in every_sample], args.data_path)
    remove_stale_temp_files(args.pred_path)
    plan = plan_run(benchmark, args, model)
    with shard_lock(args, benchmark.stem) as lock:
        claim_run_folder(args.pred_path, benchmark.stem, plan.record, args.overwrite, own_lock=lock.path)
        if plan.digests is not None:
            plan.digests.save()
        store = ResultStore(args.pred_path, benchmark.stem, args.chunk, args.index, benchmark.sample_key)
        jobs = {benchmark.sample_key(s): benchmark.build_job(s, args.data_path, plan.conv_name) for s in samples}
        for job in jobs.values():
            job.input_digest = input_digest(job, args.data_path, benchmark.answer_inputs)
        done = reusable_answers(store.load(), jobs, benchmark.answer_fields)
        todo = [job for key, job in jobs.items() if key not in done]
        logger.info("%d samples in this shard, %d to answer", len(samples), len(todo))
        new = {}
        if todo:
            if model is None:
                model, tokenizer = load_model(args)
            new = run_jobs(
                model,
                tokenizer,
                todo,
                store,
                published_settings(model, args.max_new_tokens, args.greedy),
                _record_fn(benchmark, args.save_sims, args.verbose),
                benchmark.to_error,
                batch_size=args.batch_size,
                num_workers=args.workers,
                seed=args.seed,
                desc=f"{benchmark.name} {args.index}/{args.chunk}",
                time_fields=benchmark.time_fields,
            )
        records = collect(store, args.chunk, list(jobs), done, new)
        store.write_final(records)
    if args.plot_samples:
        from etchat.eval.plot import plot_records

        plot_records(records[: args.plot_samples], Path(args.pred_path) / "plots", data_path=args.data_path)
    return ShardResult(records, skipped)


INPUT_ERRORS = (OSError, ValueError, CheckpointMismatchError, LockHeldError, ModelNotFoundError, RunMismatchError)


def main(
    benchmark: Benchmark,
    argv: list[str] | None = None,
    description: str | None = None,
    prog: str | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> ShardResult:
    """The command line; exits with a non-zero status, after writing everything, when samples were skipped or
    failed. Input a user can get wrong (options, files, a folder of another run) is one line and exit status 2."""
    args = (parser or build_parser(benchmark, description, prog)).parse_args(argv)
    setup(args)
    try:
        check_options(args)
        if args.check_complete:
            from etchat.eval.shards import report_unfinished

            samples, _ = benchmark.load_samples(args.anno_path)
            keys = [benchmark.sample_key(s) for s in samples]
            raise SystemExit(report_unfinished(args.pred_path, benchmark.stem, args.chunk, keys, benchmark.sample_key))
        result = run(benchmark, args)
    except INPUT_ERRORS as error:  # annotations, videos root, checkpoint files, the prediction folder
        exit_bad_input(error, args.verbose)
    exit_if_samples_failed(result, args)
    return result


def exit_bad_input(error: BaseException, verbose: bool) -> None:
    """The end of an inference command given input it cannot use: one line (the traceback with --verbose), exit 2."""
    if verbose:
        logger.exception("Input error")
    logger.error("%s", " ".join(str(error).split()))
    sys.exit(EXIT_BAD_INPUT)


def exit_if_samples_failed(result: ShardResult, args: argparse.Namespace) -> None:
    """Exit 1, naming the shard, when some of its samples failed (their error records are kept)."""
    failures = failure_line(result)
    if failures:
        logger.error("shard %d/%d: %s", args.index, args.chunk, failures)
        sys.exit(EXIT_FAILED_SAMPLES)
