"""Reading answers the way the official E.T. Bench scoring does: time spans, dense captions, option letters and
highlight times (docs/design.md §9).

Every rule, including its quirks, is the official one; where the official code raises on some input, the parser here
treats the answer as unparsable instead (the module docstring of `etchat.eval.etbench.compute_metrics` lists those
points).
"""

from __future__ import annotations

import re
from collections.abc import Callable

DENSE_CAPTION_RADIUS = 20  # a single predicted time t stands for [t - 20, t + 20]

# --------------------------------------------------------------------------------------------------------------------
# Time spans (grounding and complex tasks)
# --------------------------------------------------------------------------------------------------------------------

_NUMBER = r"\d+\.*\d*"  # the official pattern: it also accepts "12." and the malformed "1..2"
_HYPHEN_PAIR = re.compile(rf"({_NUMBER})\s*-\s*({_NUMBER})")
_TO_PAIR = re.compile(rf"({_NUMBER})\s* to \s*({_NUMBER})")
_SENTENCE_BREAK = re.compile(r"[!?\n]")
_PLAIN_NUMBER = re.compile(r"\b(\d+\.\d+\b|\b\d+)\b")
_CLOCK_TIME = re.compile(r"\b(\d{1,2}:\d{2}:\d{2})\b")
# The official keyword list ("starts", "ends", "happens in", "start time", ...) matches by substring, so these three
# decide alone; "end" also matches words like "friend".
_TIME_WORDS = ("start", "end", "happen")


def _number_pairs(pattern: re.Pattern, text: str) -> list[list[float]]:
    pairs = []
    for start, end in pattern.findall(text):
        try:
            pairs.append([float(start), float(end)])
        except ValueError:  # "1..2": the official script raises here
            continue
    return pairs


def _clock_seconds(clock: str) -> float:
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return float(hours * 3600 + minutes * 60 + seconds)


def _times_in_time_sentences(text: str, pattern: re.Pattern, to_seconds: Callable[[str], float]) -> list[list[float]]:
    """The first time of every sentence that speaks of a start/end/happening, paired consecutively."""
    sentences = _SENTENCE_BREAK.split(text)
    times = []
    for sentence in sentences:
        if any(word in sentence for word in _TIME_WORDS):
            found = pattern.findall(sentence)
            if found:
                times.append(to_seconds(found[0]))
    return [[times[i], times[i + 1]] for i in range(0, len(times) - 1, 2)]


def parse_spans(answer: str) -> list[list[float]] | None:
    """Time spans in an answer by the official rules (the first rule that finds something wins), or None.

    1. every ``a - b`` pair (ASCII hyphen); 2. every ``a to b`` pair; 3. the first number of each sentence (split at
    ``!``, ``?``, newline) holding a start/end/happen word, paired consecutively; 4. the same with hh:mm:ss times.
    Each span is ordered (min, max).
    """
    text = answer.lower()
    pairs = (
        _number_pairs(_HYPHEN_PAIR, text)
        or _number_pairs(_TO_PAIR, text)
        or _times_in_time_sentences(text, _PLAIN_NUMBER, float)
        or _times_in_time_sentences(text, _CLOCK_TIME, _clock_seconds)
    )
    if not pairs:
        return None
    return [[min(start, end), max(start, end)] for start, end in pairs]


# --------------------------------------------------------------------------------------------------------------------
# Dense captions (DVC, SLC)
# --------------------------------------------------------------------------------------------------------------------

_CAPTION_HYPHEN_PAIR = re.compile(rf"{_NUMBER}\s*-\s*{_NUMBER}")
_START_TIME = re.compile(r"(?:start(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?)", re.DOTALL | re.IGNORECASE)
_END_TIME = re.compile(r"(?:end(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?)", re.DOTALL | re.IGNORECASE)
_START_END_TIME = re.compile(r"start time (\d+\.*\d*), end time (\d+\.*\d*)")
_MINUTE_SECOND = re.compile(r"\d+\.*\d*:\d+\.*\d*")
_TRAILING_NUMBER = re.compile(r"\d+\.*\d*(?!\.)")


class _Unparsable(Exception):
    """The official parser raises here; the whole answer then counts as failed."""


def _captions_between_times(paragraph: str) -> tuple[list[list[float]], list[str]]:
    """Times and captions of a whole answer (official ``extract_time_from_paragraph``)."""
    paragraph = paragraph.lower()
    timestamps, captions = [], []

    pairs = _HYPHEN_PAIR.findall(paragraph)
    if pairs:
        try:
            timestamps = [[float(start), float(end)] for start, end in pairs]
        except ValueError as error:
            raise _Unparsable from error
        rest = paragraph
        for time_text in _CAPTION_HYPHEN_PAIR.findall(paragraph):
            rest = rest.replace(time_text, "\n")
        captions = rest.replace("seconds", "").split("\n")

    if not timestamps:
        starts, ends = _START_TIME.findall(paragraph), _END_TIME.findall(paragraph)
        if starts and ends:
            try:
                timestamps = [[float(start), float(end)] for start, end in zip(starts, ends)]
            except ValueError as error:
                raise _Unparsable from error
            captions = re.findall(r"description: (.*)", paragraph) or re.findall(r"\*\s*(.*)", paragraph)

    if not timestamps and _START_END_TIME.search(paragraph):
        raise _Unparsable  # the official script asserts that this format never occurs

    # The length filter looks at the raw piece, so text before the first time can become the first caption.
    captions = [c.strip().strip(", ").rstrip() for c in captions if len(c) > 5]
    keep = min(len(timestamps), len(captions))
    return timestamps[:keep], captions[:keep]


def _time_range_text(time_part: str) -> list[str]:
    """``"a - b"`` strings for one caption's time part (official ``extract_time_part``); may raise."""
    found = _CAPTION_HYPHEN_PAIR.findall(time_part)
    if not found:
        colons = time_part.count(":")
        if colons == 1:
            minutes, seconds = _MINUTE_SECOND.findall(time_part)[0].split(":")
            found = [_window_text(int(minutes) * 60 + int(seconds))]
        elif colons == 2:
            start, end = _MINUTE_SECOND.findall(time_part)
            start_seconds = int(start.split(":")[0]) * 60 + int(start.split(":")[1])
            end_seconds = int(end.split(":")[0]) * 60 + int(end.split(":")[1])
            found = [f"{start_seconds} - {end_seconds}"]
    if not found:
        found = _TRAILING_NUMBER.findall(time_part)
        if len(found) == 1:
            found = [_window_text(float(found[0]))]
        elif len(found) == 2:
            found = [f"{found[0]} - {found[1]}"]
    return found


def _window_text(time: float) -> str:
    if time > DENSE_CAPTION_RADIUS:
        return f"{time - DENSE_CAPTION_RADIUS} - {time + DENSE_CAPTION_RADIUS}"
    return f"{time} - {time + 2 * DENSE_CAPTION_RADIUS}"


def _first_timed_caption(answer: str) -> tuple[list[list[float]], list[str]]:
    """Fallback: the first line (or sentence) whose leading part holds a time; at most one caption."""
    if "\n" in answer:
        pieces = [c for c in answer.split("\n") if len(c) > 7]
    else:
        pieces = [c + "." for c in answer.split(".") if len(c) > 7]
    for piece in pieces:
        parts = [p.strip(",") for p in piece.split("seconds")]
        try:
            found = _time_range_text(parts[0])
            if not found:
                continue
            bounds = found[0].split("-")
            start, end = round(float(bounds[0].strip()), 2), round(float(bounds[1].strip()), 2)
        except (ValueError, IndexError, OverflowError):  # the official script skips the piece on any error
            continue
        return [[start, end]], [parts[-1].strip()]
    return [], []


def parse_dense_captions(answer: str) -> tuple[list[list[float]], list[str]] | tuple[None, None]:
    """(spans, captions) of a dense-captioning answer by the official rules, or (None, None) when nothing parses.

    Time pairs ``a - b`` split the answer into captions (pieces of 5 or fewer characters dropped, "seconds"
    removed); else ``start time: a`` / ``end time: b`` with ``description:`` lines; else the first line or sentence
    with a time (a single time t becomes [t-20, t+20], ``m:ss`` is read as seconds). Spans are ordered (min, max).
    """
    try:
        timestamps, captions = _captions_between_times(answer)
    except _Unparsable:
        return None, None
    if not timestamps:
        timestamps, captions = _first_timed_caption(answer)
    if not timestamps:
        return None, None
    return [[min(span), max(span)] for span in timestamps], captions


# --------------------------------------------------------------------------------------------------------------------
# Option letters (RAR, ECA, RVQ, GVQ) and highlight times (VHD)
# --------------------------------------------------------------------------------------------------------------------

BRACKETED_LETTER = re.compile(r"\(([A-Za-z])\)")
FIRST_NUMBER = re.compile(r"[-+]?\d*\.\d+|[-+]?\d+")


def strip_option_prefix(answer: str) -> str:
    """The answer without a leading ``best option:`` and ``(``."""
    if answer.lower().startswith("best option:"):
        answer = answer[12:]
    return answer.lstrip().lstrip("(").lstrip()


def leading_letter(text: str) -> str | None:
    """A letter standing alone at the start (followed by end, '.', ',', ' ' or ')'), lower-cased."""
    if len(text) == 1 or (len(text) > 1 and text[1] in (".", ",", " ", ")")):
        return text[0].lower()
    return None


# --------------------------------------------------------------------------------------------------------------------
# Why an answer gives nothing usable (the report's parse audit; the rules above decide, these only name the reason)
# --------------------------------------------------------------------------------------------------------------------

EMPTY_ANSWER = "empty answer"
_DIGIT = re.compile(r"\d")
_ANY_NUMBER = re.compile(_NUMBER)


def span_failure(answer: str) -> str | None:
    """Why `parse_spans` finds no span in the answer, or None when it finds one."""
    if parse_spans(answer) is not None:
        return None
    if not answer.strip():
        return EMPTY_ANSWER
    numbers = _ANY_NUMBER.findall(answer)
    if not numbers:
        return "no number"
    return "a single number" if len(numbers) == 1 else "numbers but no span"


def highlight_failure(answer: str) -> str | None:
    """Why VHD reads no time from the answer (it takes the first number), or None."""
    if FIRST_NUMBER.search(answer):
        return None
    return EMPTY_ANSWER if not answer.strip() else "no number"


def dense_caption_failure(answer: str) -> str | None:
    """Why `parse_dense_captions` reads no timed caption from the answer, or None when it reads one."""
    if parse_dense_captions(answer)[0] is not None:
        return None
    if not answer.strip():
        return EMPTY_ANSWER
    try:
        _captions_between_times(answer)
    except _Unparsable:
        if _START_END_TIME.search(answer.lower()):
            return "'start time a, end time b' form (refused officially)"
        return "malformed number"
    return "no time" if not _DIGIT.search(answer) else "times without a caption"


def option_letter_failure(answer: str, letters: str, bracketed: bool = True) -> str | None:
    """Why the answer names no usable option letter (one of `letters`), or None when it names one.

    Multiple choice (RAR, ECA, RVQ) looks for a bracketed letter, then a leading one (`bracketed`); GVQ for a leading
    one only. Without a usable letter the official rules pick the most similar option (an empty answer is wrong).
    """
    match = BRACKETED_LETTER.search(answer) if bracketed else None
    text = strip_option_prefix(answer.lower() if bracketed else answer)
    letter = leading_letter(text) if text else None
    found = [found.lower() for found in (match and match.group(1), letter) if found]
    if any(found_letter in letters for found_letter in found):
        return None
    if not text:
        return EMPTY_ANSWER
    if not found:
        return "no option letter"
    return (
        "'I ...' read as the letter I"
        if found == ["i"] and text[:2].lower() == "i "
        else "letter not among the options"
    )
