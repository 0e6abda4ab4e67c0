"""E.T. Bench inference (docs/design.md §8), run by the shared runner (`etchat.eval.runner`).

    python -m etchat.eval.etbench.infer --anno_path data/etbench/annotations/vid \\
        --data_path data/etbench/videos_compressed --pred_path work_dirs/etchat-stage-3/etbench \\
        --model_path work_dirs/etchat-stage-3 [--chunk k --index i]

The published protocol: phi3 prompt ``<image>\\n{q}`` with an open assistant turn; for the tasks whose spec says so
(RAR, ECA, RVQ) the prompt goes on with ``Best Option: (`` and a repetition penalty of 1.2 (sparing ``<vid>``)
applies. Each ``<vid>`` of an answer is written as its matched frame index. Each record keeps the sample's fields
plus the answer ``a``; the files are ``etbench_{i}.json`` (``etbench.json`` for one shard), the input of
``compute_metrics.py``.
"""

from __future__ import annotations

import argparse
import os

from etchat.data.conversation import chat_prompt
from etchat.data.etbench import match_tokens, read_annotations, sample_key
from etchat.eval.etbench.tasks import TASKS
from etchat.eval.runner import Benchmark, Job, LoadedJob, main
from etchat.eval.runner import build_parser as runner_parser
from etchat.model.generation import MatchedAnswer

BEST_OPTION_PROMPT = "Best Option: ("
BEST_OPTION_PENALTY = 1.2
# Fields inference writes; dropped from an input sample so an old answer or error never survives a new one.
OUTPUT_FIELDS = ("a", "error", "sims", "frame_times", "match_times")


def build_prompt(question: str, conv_name: str = "phi3", best_option: bool = False) -> str:
    """The published prompt of one question, with the Best Option prefix for the tasks that have it."""
    prompt = chat_prompt([], question, conv_name)
    if best_option:
        prompt += BEST_OPTION_PROMPT if prompt.endswith("\n") else " " + BEST_OPTION_PROMPT
    return prompt


def video_path(sample: dict, data_path: str) -> str:
    return os.path.join(data_path, sample["video"])


def build_job(sample: dict, data_path: str, conv_name: str = "phi3") -> Job:
    spec = TASKS.get(sample["task"])
    best_option = spec is not None and spec.best_option_prompt
    return Job(
        key=sample_key(sample),
        sample=sample,
        video_path=video_path(sample, data_path),
        prompt=build_prompt(sample["q"], conv_name, best_option),
        query=sample["q"],
        src=sample.get("src") if match_tokens(sample) else None,  # times written as text leave src as metadata
        repetition_penalty=BEST_OPTION_PENALTY if best_option else None,
    )


def _input_fields(sample: dict) -> dict:
    return {k: v for k, v in sample.items() if k not in OUTPUT_FIELDS}


def to_record(job: Job, answer: MatchedAnswer, loaded: LoadedJob) -> dict:
    return {**_input_fields(job.sample), "a": answer.text}


def to_error(job: Job, error: str) -> dict:
    return {**_input_fields(job.sample), "a": "", "error": error}


ETBENCH = Benchmark(
    name="E.T. Bench",
    stem="etbench",
    load_samples=read_annotations,
    sample_key=sample_key,
    video_path=video_path,
    build_job=build_job,
    to_record=to_record,
    to_error=to_error,
    answer_fields=OUTPUT_FIELDS,
    prompt_texts=(
        BEST_OPTION_PROMPT,
        f"repetition_penalty {BEST_OPTION_PENALTY}",
        "tasks " + " ".join(sorted(task for task, spec in TASKS.items() if spec.best_option_prompt)),
    ),
)


def build_parser() -> argparse.ArgumentParser:
    return runner_parser(ETBENCH, __doc__, prog="python -m etchat.eval.etbench.infer")


if __name__ == "__main__":
    main(ETBENCH, parser=build_parser())
