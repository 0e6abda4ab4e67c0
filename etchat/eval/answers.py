"""Benchmark records from free-form answers: how the answers of models that write times as text are scored
(docs/design.md §19).

E.T. Chat's runner turns an answer into a benchmark record with the matched `<vid>` tokens (times, similarity
curves). A model that writes its times as text (GPT-4o, a vLLM-served model, any lmms-eval model) gives text only;
its record holds the same fields, read from the text by E.T. Bench's own answer rules
(`etchat.eval.etbench.parsing`), so that every scorer runs unchanged:

* E.T. Bench: the answer is the record's ``a``; its scorer reads the text itself.
* Charades-STA: ``pred`` is the answer's first time span (``a - b``, else ``a to b``, else the first number of two
  sentences that speak of a start / end); none is a failure, as for E.T. Chat.
* QVHighlights moment retrieval: every span of the answer, in answer order, as windows scored 1, 1/2, 1/3, ...
  (E.T. Chat's windows are its answer's `<vid>` pairs, ranked the same way).
* QVHighlights highlight detection: the answer's first number (E.T. Bench's VHD rule) is the highlight time; a
  2-second clip scores ``1 / (1 + d)``, ``d`` its distance in clips from the clip of that time, so the answered clip
  ranks first and the others by nearness (E.T. Chat's clips are ranked by its matching curve instead).
* Dense captioning: the ``start - end, caption`` pieces, by E.T. Bench's dense-caption rules (as for E.T. Chat).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from etchat.eval.charades.infer import CHARADES_STA
from etchat.eval.dvc.infer import DENSE_CAPTIONING, answer_proposals
from etchat.eval.etbench.infer import ETBENCH, OUTPUT_FIELDS
from etchat.eval.etbench.parsing import FIRST_NUMBER, parse_spans
from etchat.eval.qvhighlights.formats import SALIENCY_KEY, WINDOWS_KEY
from etchat.eval.qvhighlights.infer import QVHIGHLIGHTS, answer_windows
from etchat.eval.qvhighlights.metrics import CLIP_SECONDS, num_clips
from etchat.eval.runner import Benchmark, Job


def first_span(text: str) -> list[float] | None:
    """The answer's first time span ``[start, end]`` by E.T. Bench's rules, or None."""
    spans = parse_spans(text)
    return spans[0] if spans else None


def span_windows(text: str) -> list[list[float]]:
    """Every span of the answer as a QVHighlights window ``[start, end, 1 / rank]``, in answer order."""
    return answer_windows([time for span in parse_spans(text) or [] for time in span])


def highlight_saliency(text: str, duration: float) -> list[float]:
    """One score per 2-second clip of ``duration``: ``1 / (1 + d)`` with ``d`` the clip's distance (in clips) from
    the clip of the answer's first number; empty when the answer holds no number."""
    match = FIRST_NUMBER.search(text)
    if match is None:
        return []
    answered = int(float(match.group(0)) // CLIP_SECONDS)
    return [1 / (1 + abs(clip - answered)) for clip in range(num_clips(duration))]


def _etbench_record(job: Job, text: str, duration: float | None) -> dict:
    return {**{k: v for k, v in job.sample.items() if k not in OUTPUT_FIELDS}, "a": text}


def _charades_record(job: Job, text: str, duration: float | None) -> dict:
    return {**job.sample, "duration": duration, "response": text, "pred": first_span(text)}


def _qvhighlights_record(job: Job, text: str, duration: float | None) -> dict:
    sample = job.sample
    if sample["task"] == "mr":
        return {**sample, "response": text, WINDOWS_KEY: span_windows(text)}
    return {**sample, "response": text, SALIENCY_KEY: highlight_saliency(text, sample["duration"])}


def _dense_captioning_record(job: Job, text: str, duration: float | None) -> dict:
    return {**job.sample, "response": text, "proposals": answer_proposals(text)}


@dataclass(frozen=True)
class TextBenchmark:
    """A benchmark for models that answer in text: the runner's description of it (samples, keys, jobs, error
    records), the record of a free-form answer (``to_record(job, text, video_duration)``), and the record fields that
    E.T. Chat fills from its `<vid>` matches instead of its text (`etchat.eval.lmms` carries them along)."""

    benchmark: Benchmark
    to_record: Callable[[Job, str, float | None], dict]
    matched_fields: tuple[str, ...] = ()


TEXT_BENCHMARKS: dict[str, TextBenchmark] = {
    "etbench": TextBenchmark(ETBENCH, _etbench_record),
    "charades": TextBenchmark(CHARADES_STA, _charades_record, ("duration", "pred")),
    "qvhighlights": TextBenchmark(QVHIGHLIGHTS, _qvhighlights_record, (WINDOWS_KEY, SALIENCY_KEY)),
    "dvc": TextBenchmark(DENSE_CAPTIONING, _dense_captioning_record),
}
