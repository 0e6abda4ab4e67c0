"""E.T. Bench annotations: reading them and checking each sample (docs/design.md §8, §15).

An annotation file is a JSON list of samples with ``idx``, ``task``, ``source``, ``video``, ``duration``, ``q`` (the
question, its times as ``<vid>`` tokens in ``annotations/vid``, as text in ``annotations/txt``) and, by task, ``src``,
``tgt``, ``p``, ``o``, ``g``. Inference (`etchat.eval.etbench.infer`), the data check (`etchat.data.check`), the
lmms-eval tasks and the baselines read them here.
"""

from __future__ import annotations

import os

from etchat.constants import MATCH_TOKEN
from etchat.data.sample_checks import Problem, match_token_error, report_problems, times_are_text
from etchat.io import read_records, record_files

REQUIRED_FIELDS = ("idx", "task", "source", "video", "q")


def sample_key(sample: dict) -> str:
    """Stable name of an E.T. Bench sample: task/source/idx."""
    return f"{sample['task']}/{sample['source']}/{sample['idx']}"


def read_annotations(path: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """Samples of an annotation file, or of every ``.json`` file of a folder (in name order), and the problems of the
    samples left out: missing fields, ``<vid>`` counts that disagree with ``src``, keys seen before."""
    samples, problems, seen = [], [], set()
    for file in record_files(path, suffixes=(".json",)):
        file_samples = read_records(file)
        times_as_text = times_are_text(match_tokens(sample) for sample in file_samples)
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
    error = match_token_error(match_tokens(sample), len(sample.get("src") or []), times_as_text, "len(src)")
    return Problem("match_tokens", f"{name} {error}") if error else None


def match_tokens(sample: dict) -> int:
    """``<vid>`` tokens in a sample's question."""
    question = sample.get("q")
    return question.count(MATCH_TOKEN) if isinstance(question, str) else 0
