"""E.T. Bench inference (docs/design.md §8), run by the shared runner (`etchat.eval.runner`).

    python -m etchat.eval.etbench.infer --anno_path data/etbench/annotations/vid \
        --data_path data/etbench/videos_compressed --pred_path work_dirs/etchat-stage-3/etbench \
        --model_path work_dirs/etchat-stage-3 [--chunk k --index i]

The published protocol: phi3 prompt ``<image>\\n{q}`` with an open assistant turn; for the tasks whose spec says so
(RAR, ECA, RVQ) the prompt goes on with ``Best Option: (`` and a repetition penalty of 1.2 (sparing ``<vid>``)
applies. Each ``<vid>`` of an answer is written as its matched frame index. Each record keeps the sample's fields
plus the answer ``a``; the files are ``etbench_{i}.json`` (``etbench.json`` for one shard), the input of
``compute_metrics.py``.
"""

from __future__ import annotations

import os

from etchat.constants import MATCH_TOKEN
from etchat.data.conversation import chat_prompt
from etchat.data.sample_checks import Problem, match_token_error, report_problems, times_are_text
from etchat.eval.etbench.predictions import sample_key
from etchat.eval.etbench.tasks import TASKS
from etchat.eval.runner import Benchmark, Job, LoadedJob, main
from etchat.io import read_records, record_files
from etchat.model.generation import MatchedAnswer

BEST_OPTION_PROMPT = "Best Option: ("
BEST_OPTION_PENALTY = 1.2
REQUIRED_FIELDS = ("idx", "task", "source", "video", "q")
# Fields inference writes; dropped from an input sample so an old answer or error never survives a new one.
OUTPUT_FIELDS = ("a", "error", "sims", "frame_times", "match_times")


def read_annotations(path: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """Samples of an annotation file, or of every ``.json`` file of a folder (in name order), and the problems of the
    samples left out: missing fields, ``<vid>`` counts that disagree with ``src``, keys seen before."""
    samples, problems, seen = [], [], set()
    for file in record_files(path, suffixes=(".json",)):
        file_samples = read_records(file)
        times_as_text = times_are_text(_match_tokens(sample) for sample in file_samples)
        for position, sample in enumerate(file_samples):
            name = f"{file}: sample #{position}"
            problem = sample_problem(sample, name, times_as_text)
            if problem is None and sample_key(sample) in seen:
                problem = Problem("duplicate", f"{name} repeats task/source/idx {sample_key(sample)}")
            if problem is not None:
                problems.append(problem)
                continue
            seen.add(sample_key(sample))
            samples.append(sample)
    return samples, problems


def load_annotations(path: str | os.PathLike) -> list[dict]:
    """Every sample of `read_annotations`; any problem is an error naming the sample."""
    samples, problems = read_annotations(path)
    report_problems(problems, len(samples) + len(problems), "E.T. Bench samples", strict=True)
    return samples


def sample_problem(sample: dict, name: str, times_as_text: bool = False) -> Problem | None:
    """Why a benchmark sample cannot be answered, or None. ``times_as_text``: its file writes times as text (the
    ``txt`` annotations), so ``src`` is metadata (docs/design.md §15)."""
    missing = [k for k in REQUIRED_FIELDS if k not in sample]
    if missing:
        return Problem("malformed", f"{name} lacks {', '.join(missing)}")
    if not isinstance(sample["q"], str):
        return Problem("malformed", f"{name}: q must be a string")
    error = match_token_error(_match_tokens(sample), len(sample.get("src") or []), times_as_text, "len(src)")
    return Problem("match_tokens", f"{name} {error}") if error else None


def _match_tokens(sample: dict) -> int:
    question = sample.get("q")
    return question.count(MATCH_TOKEN) if isinstance(question, str) else 0


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
        src=sample.get("src") if _match_tokens(sample) else None,  # times written as text leave src as metadata
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


if __name__ == "__main__":
    main(ETBENCH, description=__doc__)
