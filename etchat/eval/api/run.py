"""Any OpenAI-compatible chat endpoint on E.T. Bench and the other benchmarks (docs/design.md §19).

    python -m etchat.eval.api --model gpt-4o --benchmark etbench --subset \\
        --anno_path data/etbench/annotations/txt --data_path data/etbench/videos --pred_path work_dirs/gpt-4o/etbench
    python compute_metrics.py work_dirs/gpt-4o/etbench

Each sample's question (E.T. Bench's ``q`` with times written as text, or the question E.T. Chat is asked on the other
benchmarks) goes to the endpoint with the video (`etchat.eval.api.protocol`: sampled frames with their times, or the
video file), ``--concurrency`` requests at a time, at most ``--requests_per_minute``, each retried with backoff
(`etchat.eval.api.client`). The answer is read into the benchmark's own record by E.T. Bench's answer rules
(`etchat.eval.answers`), so the benchmark's scorer runs unchanged on the folder.

Like E.T. Chat's inference (`etchat.eval.runner`): shard ``i`` of ``k`` (``--chunk k --index i``) answers samples
``i, i + k, ...`` into the benchmark's files (``etbench_{i}.json``, ...), every record is journalled as it comes and
a rerun skips what is done (and retries failed samples); a sample whose video cannot be read or whose request fails
after its retries gets an ``error`` field and the run goes on, then exits with status 1 saying how many. ``run.json``
records the endpoint's model, the settings and the prompts; a folder holding answers made under other settings is
refused (status 2). So is an endpoint that refuses every request (a wrong key, an unknown model).
"""

from __future__ import annotations

import argparse
import logging
import os
from concurrent.futures import ThreadPoolExecutor, as_completed

from tqdm import tqdm

from etchat.cli import setup_logging, shard_log_format
from etchat.constants import MATCH_TOKEN
from etchat.data.sample_checks import report_problems
from etchat.eval.answers import TEXT_BENCHMARKS, TextBenchmark
from etchat.eval.api.client import ChatClient, Decoding, EndpointError, RateLimiter, RetryPolicy
from etchat.eval.api.frames import FrameSampling, probe_duration, sample_frames, video_data_url
from etchat.eval.api.protocol import PROTOCOL_TEXTS, frames_message, video_message
from etchat.eval.etbench.predictions import load_subset
from etchat.eval.results import ResultStore, shard
from etchat.eval.run_record import build_record, claim_run_folder, json_digest
from etchat.eval.runner import (
    TIME_SLACK,
    Job,
    ShardResult,
    check_some_video_exists,
    collect,
    describe_error,
    exit_bad_input,
    exit_if_samples_failed,
    time_problem,
)
from etchat.io import remove_stale_temp_files, without_non_finite

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Samples
# --------------------------------------------------------------------------------------------------------------------


def in_subset(sample: dict, subset: dict) -> bool:
    return sample["idx"] in subset.get(sample["task"], {}).get(sample["source"], ())


def load_samples(text_benchmark: TextBenchmark, args: argparse.Namespace) -> tuple[list[dict], list]:
    """The usable samples (E.T. Bench: only the 470 of the subset with ``--subset``) and the problems of the others.
    E.T. Bench questions holding `<vid>` tokens are refused: a model that reads frames needs the times as text."""
    samples, problems = text_benchmark.benchmark.load_samples(args.anno_path)
    if args.benchmark == "etbench":
        if args.subset:
            subset = load_subset()
            samples = [sample for sample in samples if in_subset(sample, subset)]
        with_tokens = next((s for s in samples if MATCH_TOKEN in s["q"]), None)
        if with_tokens is not None:
            raise ValueError(
                f"{args.anno_path}: E.T. Bench question {with_tokens['task']}/{with_tokens['source']}/"
                f"{with_tokens['idx']} holds {MATCH_TOKEN} tokens; models that answer in text need the annotations "
                "with times written as text (data/etbench/annotations/txt)"
            )
    elif args.subset:
        raise ValueError(
            "--subset is E.T. Bench's 470-sample subset; it does not apply to --benchmark " + args.benchmark
        )
    return samples, problems


# --------------------------------------------------------------------------------------------------------------------
# The run record
# --------------------------------------------------------------------------------------------------------------------


def run_settings(args: argparse.Namespace) -> dict:
    """Everything an answer depends on besides the model: decoding, what is shown of the video, the prompts."""
    sampling = frame_sampling(args)
    return {
        "decoding": {
            "greedy": args.temperature == 0,
            "temperature": args.temperature,
            "top_k": None,
            "top_p": args.top_p,
            "max_new_tokens": args.max_new_tokens,
            "repetition_penalty": None,
            "seed": args.seed,
        },
        "video": {
            "input": args.input,
            "fps": sampling.fps if args.input == "frames" else None,
            "num_frames": sampling.num_frames if args.input == "frames" else None,
            "min_frames": None,
            "max_frames": sampling.max_frames if args.input == "frames" else None,
            "frame_size": sampling.short_side if args.input == "frames" else None,
            "frame_times": args.frame_times if args.input == "frames" else None,
            "image_detail": args.image_detail if args.input == "frames" else None,
            "vision_processor": None,
        },
        "prompts_digest": json_digest({"protocol": PROTOCOL_TEXTS, "benchmark": args.benchmark}),
        "dtype": None,
    }


def run_record(args: argparse.Namespace) -> dict:
    """The shared run record (docs/design.md §13) of an endpoint: its model name, no revision or weights to digest,
    and its address, which is recorded but not compared (the same model may be served elsewhere on a rerun)."""
    import openai

    model = {"name": args.model, "revision": None, "weights_digest": None, "endpoint": args.base_url}
    record = build_record(TEXT_BENCHMARKS[args.benchmark].benchmark.stem, model, run_settings(args), device="api")
    record["environment"]["openai"] = openai.__version__
    return record


# --------------------------------------------------------------------------------------------------------------------
# Answering
# --------------------------------------------------------------------------------------------------------------------


def frame_sampling(args: argparse.Namespace) -> FrameSampling:
    num_frames = None if args.fps else args.num_frames
    return FrameSampling(num_frames=num_frames, fps=args.fps, max_frames=args.max_frames, short_side=args.frame_size)


def answer_job(job: Job, text_benchmark: TextBenchmark, client: ChatClient, args: argparse.Namespace) -> dict:
    """The record of one sample: its answer read into the benchmark's record, or an error record. `EndpointError`
    passes through (it stops the run)."""
    try:
        if args.input == "frames":
            frames = sample_frames(job.video_path, frame_sampling(args))
            duration = frames.duration
            messages = frames_message(job.query, frames, args.frame_times, args.image_detail)
        else:
            duration = probe_duration(job.video_path)
            messages = video_message(job.query, video_data_url(job.video_path))
        annotated = job.sample.get("duration")
        if isinstance(annotated, (int, float)) and abs(annotated - duration) > TIME_SLACK:
            logger.warning("%s: annotated duration %s s, but the video lasts %s s", job.key, annotated, duration)
        problem = time_problem(job.sample, text_benchmark.benchmark.time_fields, duration)
        if problem:
            return text_benchmark.benchmark.to_error(job, problem)
        text = client.answer(messages, job.key)
        if args.verbose:
            logger.info("%s\n%s\n-> %s", job.key, job.query, text)
        return text_benchmark.to_record(job, text, duration)
    except EndpointError:
        raise
    except Exception as error:  # an unreadable video or a request that failed for good: this sample's error
        logger.warning("%s: %s", job.key, describe_error(error))
        return text_benchmark.benchmark.to_error(job, describe_error(error))


def answer_jobs(jobs: list[Job], text_benchmark: TextBenchmark, client, store: ResultStore, args, desc: str) -> dict:
    """Answer ``jobs`` with ``args.concurrency`` threads, journalling each record as it comes; key -> record."""
    records = {}
    with ThreadPoolExecutor(max_workers=args.concurrency) as pool:
        futures = [pool.submit(answer_job, job, text_benchmark, client, args) for job in jobs]
        try:
            with tqdm(total=len(jobs), unit="sample", desc=desc, dynamic_ncols=True) as bar:
                for future in as_completed(futures):
                    record = without_non_finite(future.result())
                    store.append(record)
                    records[store.key_fn(record)] = record
                    bar.update(1)
                    bar.set_postfix(errors=sum("error" in r for r in records.values()))
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return records


def make_client(args: argparse.Namespace) -> ChatClient:
    decoding = Decoding(args.temperature, args.top_p, args.max_new_tokens, args.seed)
    return ChatClient(
        args.model,
        args.base_url,
        args.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY",
        decoding,
        timeout=args.timeout,
        retry=RetryPolicy(args.max_retries, args.retry_backoff, args.max_backoff),
        limiter=RateLimiter(args.requests_per_minute),
    )


def run(args: argparse.Namespace, client: ChatClient | None = None) -> ShardResult:
    """Answer shard ``args.index`` of ``args.chunk``; writes and returns its records."""
    text_benchmark = TEXT_BENCHMARKS[args.benchmark]
    benchmark = text_benchmark.benchmark
    every_sample, skipped = load_samples(text_benchmark, args)
    report_problems(skipped, len(every_sample) + len(skipped), f"{benchmark.name} samples", strict=args.strict)
    if not every_sample:
        raise ValueError(f"{args.anno_path}: no sample to answer")
    samples = shard(every_sample, args.chunk, args.index)
    remove_stale_temp_files(args.pred_path)
    claim_run_folder(args.pred_path, benchmark.stem, run_record(args), overwrite=args.overwrite)
    store = ResultStore(args.pred_path, benchmark.stem, args.chunk, args.index, benchmark.sample_key)
    done = store.load()
    todo = [s for s in samples if benchmark.sample_key(s) not in done]
    logger.info("%d samples in this shard, %d to answer", len(samples), len(todo))
    new = {}
    if todo:
        check_some_video_exists([benchmark.video_path(s, args.data_path) for s in every_sample], args.data_path)
        jobs = [benchmark.build_job(sample, args.data_path, "phi3") for sample in todo]
        desc = f"{benchmark.name} {args.index}/{args.chunk}"
        new = answer_jobs(jobs, text_benchmark, client or make_client(args), store, args, desc)
    records = collect(store, args.chunk, [benchmark.sample_key(s) for s in samples], done, new)
    store.write_final(records)
    return ShardResult(records, skipped)


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.eval.api", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--benchmark", choices=sorted(TEXT_BENCHMARKS), default="etbench")
    parser.add_argument("--anno_path", required=True, help="annotation file or folder (E.T. Bench: annotations/txt)")
    parser.add_argument("--data_path", required=True, help="video root folder")
    parser.add_argument("--pred_path", required=True, help="folder the predictions go to")
    parser.add_argument("--subset", action="store_true", help="E.T. Bench: only the 470 samples of the subset")
    endpoint = parser.add_argument_group("endpoint")
    endpoint.add_argument(
        "--model", required=True, help="the endpoint's model name (gpt-4o, the vLLM --served-model-name)"
    )
    endpoint.add_argument(
        "--base_url",
        default=os.environ.get("OPENAI_BASE_URL"),
        help="e.g. http://localhost:8000/v1 (default: $OPENAI_BASE_URL, else OpenAI's)",
    )
    endpoint.add_argument("--api_key", default=None, help="default: $OPENAI_API_KEY (EMPTY when unset, as vLLM takes)")
    endpoint.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    endpoint.add_argument("--requests_per_minute", type=float, default=None, help="rate limit over all requests")
    endpoint.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before a request is abandoned (and retried)"
    )
    endpoint.add_argument("--max_retries", type=int, default=5, help="retries of a request that may succeed later")
    endpoint.add_argument("--retry_backoff", type=float, default=1.0, help="seconds before the first retry, doubling")
    endpoint.add_argument("--max_backoff", type=float, default=60.0, help="longest wait between retries (seconds)")
    video = parser.add_argument_group("what the model is shown")
    video.add_argument(
        "--input",
        choices=("frames", "video"),
        default="frames",
        help="sampled frames as images, or the video file (video_url)",
    )
    video.add_argument("--num_frames", type=int, default=8, help="frames spread evenly over the video (the paper's 8)")
    video.add_argument("--fps", type=float, default=None, help="sample at this rate instead of --num_frames")
    video.add_argument("--max_frames", type=int, default=None, help="with --fps: at most this many frames")
    video.add_argument(
        "--frame_size", type=int, default=448, help="short side of the frames sent (larger ones are scaled down)"
    )
    video.add_argument(
        "--no_frame_times",
        dest="frame_times",
        action="store_false",
        help="send frames without their time labels (as the E.T. Bench authors did)",
    )
    video.add_argument(
        "--image_detail",
        choices=("low", "high", "auto"),
        default=None,
        help="OpenAI's image detail (default: not sent)",
    )
    decoding = parser.add_argument_group("decoding")
    decoding.add_argument("--temperature", type=float, default=0.0)
    decoding.add_argument("--top_p", type=float, default=1.0)
    decoding.add_argument("--max_new_tokens", type=int, default=2048)
    decoding.add_argument("--seed", type=int, default=None, help="sent when given (not every endpoint takes one)")
    parser.add_argument("--chunk", type=int, default=1, help="number of shards (processes)")
    parser.add_argument("--index", type=int, default=0, help="shard of this process, 0 <= index < chunk")
    parser.add_argument("--strict", action="store_true", help="refuse the annotations when a sample cannot be used")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the answers of an earlier run in --pred_path made with another model or other settings "
        "(default: refuse; a run with the same ones resumes, whatever the endpoint's address)",
    )
    parser.add_argument("--verbose", action="store_true", help="log every question and answer")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.concurrency < 1:
        parser.error("--concurrency must be >= 1")
    if args.max_retries < 0:
        parser.error("--max_retries must be >= 0")
    try:
        shard([], args.chunk, args.index)
        frame_sampling(args)
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> ShardResult:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    setup_logging(fmt=shard_log_format(args.index, args.chunk))
    try:
        result = run(args)
    except (OSError, ValueError, EndpointError) as error:
        exit_bad_input(error, args.verbose)
    exit_if_samples_failed(result, args)
    return result
