"""Checks of annotation samples and their videos, shared by the data check, training and inference
(docs/design.md §15).

A sample that cannot be used gets a `Problem`: its kind and a one-line reason naming it. Training and inference skip
such samples and log how many there were and the first few reasons (`report_problems`); with ``--strict`` they
refuse the file instead. `python -m etchat.data.check` runs the same checks before a run, plus the video probes of
`inspect_video`.

Timestamps come in two styles (docs/design.md §6): as ``<vid>`` tokens, whose values are in ``src`` (question) and
``tgt`` (answer), or as text, where ``src`` / ``tgt`` are kept as metadata only (E.T. Bench's ``txt`` annotations,
``et_instruct_164k_txt.json``). A file none of whose samples holds a ``<vid>`` token is of the text style; in a file of
the ``<vid>`` style every sample must hold exactly as many tokens as it has times.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from etchat.constants import MATCH_TOKEN

logger = logging.getLogger(__name__)

# Kinds of problem, in report order, with what a report calls them.
LOST = {
    "malformed": "malformed samples",
    "match_tokens": f"{MATCH_TOKEN} counts that disagree with the times",
    "times": "times that are not finite seconds within the video, or spans that end before they start",
    "duplicate": "samples whose key repeats an earlier one",
    "missing_media": "missing videos or images",
    "unreadable_video": "unreadable videos",
    "video_length": "videos whose file length a stage's bounds reject",
}
WARNINGS = {
    "duration": "annotation durations more than 1 s off the file's",
    "shared_id": "samples sharing their id with an earlier, different sample (kept)",
}
DURATION_TOLERANCE = 1.0  # seconds
NUM_REASONS_LOGGED = 3


@dataclass(frozen=True)
class Problem:
    kind: str  # a key of LOST or WARNINGS
    message: str  # one line, naming the sample and what is wrong

    @property
    def loses_sample(self) -> bool:
        return self.kind in LOST


class SampleError(ValueError):
    """A sample that cannot be used, with the kind of problem it has."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def count_match_tokens(texts: Iterable[str]) -> int:
    return sum(text.count(MATCH_TOKEN) for text in texts)


def times_are_text(token_counts: Iterable[int]) -> bool:
    """Whether a file whose samples hold these ``<vid>`` counts writes its timestamps as text."""
    return not any(token_counts)


def match_token_error(num_tokens: int, num_times: int, times_as_text: bool, fields: str) -> str | None:
    """Why ``num_tokens`` ``<vid>`` tokens cannot stand for ``num_times`` times (``fields`` names where the times
    are), or None. In a file of text timestamps the times are metadata and there are no tokens."""
    if times_as_text or num_tokens == num_times:
        return None
    return f"has {num_tokens} {MATCH_TOKEN} tokens but {fields} = {num_times}"


# ---- times ----------------------------------------------------------------------------------------------------------
TIME_FIELDS = ("src", "tgt")
# Two <vid> tokens written as a span ("<vid> - <vid>", "from <vid> to <vid>"): the first time must not be the later.
_SPAN = re.compile(rf"{re.escape(MATCH_TOKEN)}\s*(?:-|–|to)\s*{re.escape(MATCH_TOKEN)}")


def _is_time(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _time_error(name: str, value, duration: float | None, slack: float, within: str) -> str | None:
    if not _is_time(value):
        return f"'{name}' holds {value!r}, not a finite time in seconds"
    if value < 0 or (duration is not None and value > duration + slack):
        limit = f"0-{duration} s" if duration is not None else "0 s or later"
        return f"'{name}' holds {value} s, outside {within} ({limit})"
    return None


def duration_problem(sample: dict) -> str | None:
    """Why the ``duration`` of a sample is unusable (not a finite, non-negative number of seconds), or None."""
    if "duration" not in sample or sample["duration"] is None:
        return None
    duration = sample["duration"]
    return None if _is_time(duration) and duration >= 0 else f"'duration' holds {duration!r}, not seconds"


def span_pairs(texts: Sequence[str]) -> list[int]:
    """Positions ``i`` (among all ``<vid>`` tokens of ``texts``, in order) whose token and the next one are written
    as a span."""
    pairs, offset = [], 0
    for text in texts:
        starts = [m.start() for m in re.finditer(re.escape(MATCH_TOKEN), text)]
        pairs += [offset + starts.index(m.start()) for m in _SPAN.finditer(text)]
        offset += len(starts)
    return pairs


def _walk_times(name: str, value, depth: int, check, flat: list) -> str | None:
    """Check every time in ``value`` (a field's list of times, or of lists of them nested to any depth, such as E.T.
    Bench's per-annotator lists of [start, end] windows); the field's own top-level times are collected in ``flat``."""
    if not isinstance(value, list):
        error = check(name, value)
        if error is None and depth == 1:
            flat.append(value)
        return error
    for item in value:
        error = _walk_times(name, item, depth + 1, check, flat)
        if error:
            return error
    if depth >= 1 and len(value) == 2 and not any(isinstance(item, list) for item in value) and value[0] > value[1]:
        return f"'{name}' holds the span {value}, which ends before it starts"
    return None


def time_problem(
    sample: dict,
    fields: Sequence[str] = TIME_FIELDS,
    duration: float | None = None,
    slack: float = DURATION_TOLERANCE,
    texts: Sequence[str] = (),
    within: str = "the video",
) -> str | None:
    """Why the times of ``sample`` cannot be used, or None: every time in ``fields`` (a list of seconds, or of
    [start, end] spans, nested to any depth) must be a finite number in ``[0, duration + slack]``, and every span,
    nested or written as ``<vid> - <vid>`` in ``texts`` (whose tokens stand for the top-level times of ``fields`` in
    order), must not end before it starts. ``duration`` defaults to the sample's own."""
    if duration is None and _is_time(sample.get("duration")):
        duration = sample["duration"]

    def check(name, value):
        return _time_error(name, value, duration, slack, within)

    flat: list = []
    for name in fields:
        value = sample.get(name)
        if value is None:
            continue
        if not isinstance(value, list):
            return f"'{name}' holds {value!r}, not a list of times in seconds"
        error = _walk_times(name, value, 0, check, flat)
        if error:
            return error
    for i in span_pairs(texts):
        if i + 1 < len(flat) and flat[i] > flat[i + 1]:
            return f"the span {MATCH_TOKEN} - {MATCH_TOKEN} of times {flat[i]} and {flat[i + 1]} ends before it starts"
    return None


# ---- repeated samples ------------------------------------------------------------------------------------------------
class RepeatedIds:
    """Samples whose ``id`` was seen before: the same sample twice is a duplicate (skipped, it would be trained on
    twice), a different sample under the same id a warning (the published LLaVA mix names several questions about
    one image by the image's id, and those are all trained on)."""

    def __init__(self):
        self.first: dict = {}

    def check(self, sample, name: str) -> Problem | None:
        sample_id = sample.get("id") if isinstance(sample, dict) else None
        if sample_id is None or not isinstance(sample_id, (str, int)):
            return None
        if sample_id not in self.first:
            self.first[sample_id] = (name, sample)
            return None
        first_name, first = self.first[sample_id]
        if first == sample:
            return Problem("duplicate", f"{name} repeats {first_name} (same id {sample_id!r}, same content)")
        return Problem("shared_id", f"{name} has the id {sample_id!r} of {first_name}, with other content")


def report_problems(problems: list[Problem], total: int, what: str, strict: bool = False) -> None:
    """Log the samples that are skipped: how many, of which kinds, and the first few reasons. With ``strict`` raise a
    ValueError instead, so that nothing is skipped silently. Warnings are logged with their count."""
    for kind, title in WARNINGS.items():
        found = [p for p in problems if p.kind == kind]
        if found:
            logger.warning("%d of %d %s: %s; first: %s", len(found), total, what, title, found[0].message)
    lost = [p for p in problems if p.loses_sample]
    if not lost:
        return
    kinds = Counter(p.kind for p in lost)
    summary = (
        f"{len(lost)} of {total} {what} cannot be used ("
        + ", ".join(f"{count} {LOST[kind]}" for kind, count in kinds.items())
        + "); first: "
        + " | ".join(p.message for p in lost[:NUM_REASONS_LOGGED])
    )
    if strict:
        raise ValueError(summary)
    logger.warning("%s. They are skipped (--strict refuses instead).", summary)


# ---- videos ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoReport:
    """What `inspect_video` found: the file's duration in seconds, or the problem of an unreadable one."""

    path: str
    duration: float | None = None
    error: str | None = None
    missing: bool = False


def probe_duration(path: str) -> float:
    """The length of the video stream from the container's metadata, without decoding; raises when there is none."""
    import av

    with av.open(path) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        if stream.duration is not None and stream.time_base:
            return float(stream.duration * stream.time_base)
        if container.duration is not None:
            return container.duration / av.time_base
        if stream.frames and stream.average_rate:
            return stream.frames / float(stream.average_rate)
    raise ValueError("the container gives no duration")


def inspect_video(path: str, decode: bool = False, short_side: int | None = 224) -> VideoReport:
    """Whether ``path`` exists and opens (container probe), and with ``decode`` whether its 1 fps frames decode the
    way training and inference read them: scaled to ``short_side`` while decoding, so that a 4K clip costs what a
    224 px one costs (docs/design.md §1); the duration comes from the decoded stream then (frames / average rate)."""
    if not os.path.isfile(path):
        return VideoReport(path, missing=True)
    try:
        if decode:
            from etchat.data.video import load_video

            return VideoReport(path, duration=load_video(path, fps=1.0, short_side=short_side).duration)
        return VideoReport(path, duration=probe_duration(path))
    except Exception as error:  # noqa: BLE001 - any failure is this video's report
        return VideoReport(path, error=f"{type(error).__name__}: {error}")


def video_problems(report: VideoReport, names: list[str], durations: list[float | None]) -> list[Problem]:
    """Problems of the samples ``names`` (with annotated ``durations``) that use the video of ``report``."""
    if report.missing:
        return [Problem("missing_media", f"{name}: no video file {report.path}") for name in names]
    if report.error is not None:
        return [Problem("unreadable_video", f"{name}: cannot read {report.path}: {report.error}") for name in names]
    problems = []
    for name, duration in zip(names, durations):
        if duration is not None and abs(float(duration) - report.duration) > DURATION_TOLERANCE:
            message = f"{name}: duration {duration} s but {report.path} lasts {report.duration:.3f} s"
            problems.append(Problem("duration", message))
    return problems
