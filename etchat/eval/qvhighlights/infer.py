"""QVHighlights inference (docs/design.md §16), run by the shared runner (`etchat.eval.runner`).

    python -m etchat.eval.qvhighlights.infer --anno_path data/qvhighlights/highlight_val_release.jsonl \
        --data_path data/qvhighlights/videos --pred_path work_dirs/etchat-stage-3/qvhighlights \
        --model_path work_dirs/etchat-stage-3 [--chunk k --index i]

Annotations: the Moment-DETR ``.jsonl`` (``qid``, ``query``, ``vid``, ``duration``, and in the val split the ground
truth); the video of a query is ``<data_path>/<vid>.mp4``. Each query is asked twice, with the phi3 prompt
``<image>\\n{question}`` and the published decoding:

* moment retrieval (``task: mr``), `prompts.MR_QUESTION`: the answer's ``<vid>`` times, paired in order, are the windows
  ``pred_relevant_windows`` ``[start, end, 1 / rank]`` (each pair ordered; the answer's order is the ranking);
* highlight detection (``task: hd``), `prompts.HD_QUESTION`: the first ``<vid>`` token's matching probabilities over the
  frames give ``pred_saliency_scores``, one per 2-second clip of the annotated duration (the best frame of the clip),
  so the clip of the answered time scores highest.

An answer without a pair of times (or without a ``<vid>``) gives an empty list, counted as a failure when scored.
Shard ``i`` of ``k`` writes ``qvhighlights_{i}.json``: one record per query and task, the annotation line plus
``task``, ``response`` and the prediction. ``python -m etchat.eval.qvhighlights <pred_path>`` turns them into the
standard submission ``qvhighlights_submission.jsonl`` and scores it (``scripts/inference_qvhighlights.sh`` runs both).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from etchat.data.conversation import chat_prompt
from etchat.eval.qvhighlights.formats import SALIENCY_KEY, STEM, WINDOWS_KEY
from etchat.eval.qvhighlights.metrics import CLIP_SECONDS, num_clips
from etchat.eval.qvhighlights.prompts import QUESTIONS, question
from etchat.eval.runner import Benchmark, Job, LoadedJob, main
from etchat.io import read_records
from etchat.model.generation import MatchedAnswer

PREDICTION_KEYS = {"mr": WINDOWS_KEY, "hd": SALIENCY_KEY}
REQUIRED_FIELDS = ("qid", "query", "vid", "duration")


def load_queries(path: str | os.PathLike) -> list[dict]:
    """The samples of an annotation file: each query twice, as ``task`` mr and hd; fields and qids checked."""
    lines = read_records(path)
    seen = set()
    for position, line in enumerate(lines):
        missing = [name for name in REQUIRED_FIELDS if name not in line]
        if missing:
            raise ValueError(f"{path}: entry #{position} lacks {', '.join(missing)}")
        if line["qid"] in seen:
            raise ValueError(f"{path}: qid {line['qid']!r} appears twice")
        duration = line["duration"]
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not duration > 0:
            raise ValueError(f"{path}: qid {line['qid']!r}: 'duration' must be a positive number, got {duration!r}")
        seen.add(line["qid"])
    if not lines:
        raise ValueError(f"{path}: no query")
    return [{**line, "task": task} for line in lines for task in QUESTIONS]


def read_queries(path: str | os.PathLike) -> tuple[list[dict], list]:
    """`load_queries` for the runner: a bad line refuses the file (no sample is skipped)."""
    return load_queries(path), []


def sample_key(sample: dict) -> str:
    return f"{sample['qid']}/{sample['task']}"


def video_path(sample: dict, data_path: str) -> str:
    return os.path.join(data_path, f"{sample['vid']}.mp4")


def build_job(sample: dict, data_path: str, conv_name: str = "phi3") -> Job:
    text = question(sample["task"], sample["query"])
    return Job(
        key=sample_key(sample),
        sample=sample,
        video_path=video_path(sample, data_path),
        prompt=chat_prompt([], text, conv_name),
        query=text,
    )


def answer_windows(times: Sequence[float]) -> list[list[float]]:
    """Consecutive pairs of times as [start, end, score], scored 1, 1/2, 1/3, ... in answer order."""
    pairs = [sorted(times[i : i + 2]) for i in range(0, len(times) - 1, 2)]
    return [[start, end, 1 / rank] for rank, (start, end) in enumerate(pairs, 1)]


def clip_saliency(probabilities: Sequence[float], frame_times: Sequence[float], duration: float) -> list[float]:
    """One score per 2-second clip of ``duration``: the highest matching probability among the clip's frames."""
    scores = [0.0] * num_clips(duration)
    for probability, time in zip(probabilities, frame_times):
        clip = int(time // CLIP_SECONDS)
        if clip < len(scores):
            scores[clip] = max(scores[clip], float(probability))
    return scores


def to_record(job: Job, answer: MatchedAnswer, loaded: LoadedJob) -> dict:
    sample = job.sample
    if sample["task"] == "mr":
        prediction = answer_windows(answer.times)
    elif answer.similarities:
        prediction = clip_saliency(answer.similarities[0].tolist(), loaded.tags, sample["duration"])
    else:
        prediction = []
    return {**sample, "response": answer.text, PREDICTION_KEYS[sample["task"]]: prediction}


def to_error(job: Job, error: str) -> dict:
    return {**job.sample, "response": "", PREDICTION_KEYS[job.sample["task"]]: [], "error": error}


QVHIGHLIGHTS = Benchmark(
    name="QVHighlights",
    stem=STEM,
    load_samples=read_queries,
    sample_key=sample_key,
    video_path=video_path,
    build_job=build_job,
    to_record=to_record,
    to_error=to_error,
    # The ground-truth windows are read by the official scorer as they are; no input time needs checking.
    time_fields=(),
    answer_fields=("response", WINDOWS_KEY, SALIENCY_KEY, "error"),
    prompt_texts=tuple(QUESTIONS[task] for task in sorted(QUESTIONS)),
    answer_inputs=("duration",),  # the saliency list has one score per 2-second clip of the annotated duration
)


if __name__ == "__main__":
    main(QVHIGHLIGHTS, description=__doc__)
