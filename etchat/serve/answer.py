"""An answer about a video, as people read it: each `<vid>` token shown as the time of the frame it matched.

`ChatAnswer` holds a finished answer (text with mm:ss.s times, the raw text with the tokens, the matches);
`AnswerStream` turns tokens into that text while they are generated, for the chat and the web demo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from etchat.constants import MATCH_TOKEN
from etchat.data.tokenization import fill_match_tokens, format_seconds, match_positions, match_token_offsets

if TYPE_CHECKING:
    from etchat.model.generation import GenerationSettings, MatchedAnswer

SIM_DECIMALS = 6

TextCallback = Callable[[str], None]


def seconds_text(seconds: float) -> str:
    """A time as the model writes it in text: plain seconds, no trailing ``.0`` (``12``, ``12.5``)."""
    return f"{round(float(seconds), 1):g}"


def answer_parts(raw_text: str, times: list[float], offsets: list[int] | None = None) -> list[str | float]:
    """``raw_text`` split at its `<vid>` tokens into text pieces and the matched times (floats) between them.

    ``offsets`` (`match_token_offsets`) place the tokens when the text also spells "<vid>" out; a `<vid>` without a
    time (a model without matching) stays as text.
    """
    offsets = match_positions(raw_text) if offsets is None else offsets
    parts: list[str | float] = []
    end = 0
    for k, offset in enumerate(offsets):
        parts += [raw_text[end:offset], float(times[k]) if k < len(times) else MATCH_TOKEN]
        end = offset + len(MATCH_TOKEN)
    parts.append(raw_text[end:])
    return [p for p in parts if p != ""]


def join_parts(parts: list[str | float], time_format: Callable[[float], str] = format_seconds) -> str:
    return "".join(p if isinstance(p, str) else time_format(p) for p in parts)


@dataclass
class ChatAnswer:
    """One answer about a video. ``text`` shows each `<vid>` as mm:ss.s; ``raw_text`` keeps the tokens."""

    question: str
    text: str
    raw_text: str
    times: list[float] = field(default_factory=list)
    frame_indices: list[int] = field(default_factory=list)
    similarities: list[list[float]] = field(default_factory=list)
    frame_times: list[float] = field(default_factory=list)
    match_offsets: list[int] | None = None  # where in raw_text each `<vid>` token is (None: every "<vid>" is one)

    @classmethod
    def from_matched(cls, question: str, matched: MatchedAnswer, frame_times: list[float]) -> ChatAnswer:
        return cls(
            question=question,
            text=join_parts(answer_parts(matched.raw_text, matched.times, matched.match_offsets)),
            raw_text=matched.raw_text,
            times=[float(t) for t in matched.times],
            frame_indices=[int(i) for i in matched.frame_indices],
            similarities=[[float(x) for x in sim.tolist()] for sim in matched.similarities],
            frame_times=[float(t) for t in frame_times],
            match_offsets=list(matched.match_offsets),
        )

    @property
    def parts(self) -> list[str | float]:
        return answer_parts(self.raw_text, self.times, self.match_offsets)

    def history_text(self) -> str:
        """The answer as it goes back into the prompt of a later question (times as plain seconds)."""
        offsets = self.match_offsets
        if len(offsets if offsets is not None else self.raw_text.split(MATCH_TOKEN)[1:]) != len(self.times):
            return self.raw_text
        return fill_match_tokens(self.raw_text, [seconds_text(t) for t in self.times], offsets=offsets)

    def to_json(self) -> dict:
        """The JSON record of ``--json``: the answer (times as mm:ss.s), the raw answer and the matches."""
        return {
            "question": self.question,
            "answer": self.text,
            "raw_answer": self.raw_text,
            "times": self.times,
            "frame_indices": self.frame_indices,
            "similarities": [[round(x, SIM_DECIMALS) for x in sim] for sim in self.similarities],
            "frame_times": self.frame_times,
        }


class AnswerStream:
    """Turns the tokens of an answer, as they are generated, into text that only ever grows.

    The whole answer is decoded again at every token (word pieces decode differently alone), each `<vid>` shown as
    the time of the frame matched at its step. Text that may still change is held back: trailing white space (the
    final answer is stripped), an incomplete character, and a possible start of a stop string.
    """

    def __init__(self, tokenizer, match_token_id: int | None, frame_times: list[float], settings: GenerationSettings):
        self.tokenizer = tokenizer
        self.match_token_id = match_token_id
        self.frame_times = frame_times
        self.stop_strings = [s for s in settings.stop_strings if s]
        self.skip_ids = set(settings.eos_token_ids)
        self.token_ids: list[int] = []
        self.times: list[float] = []
        self.shown = ""

    def push(self, token_id: int, match: tuple[int, torch.Tensor] | None = None) -> str:
        """Add a token (and the match of its step); return the text that became printable."""
        if token_id in self.skip_ids:
            return ""
        self.token_ids.append(token_id)
        if token_id == self.match_token_id and match is not None:
            frame = int(match[0])
            self.times.append(float(self.frame_times[frame]) if frame < len(self.frame_times) else float(frame))
        text = self._stable(join_parts(self.parts()))
        if len(text) <= len(self.shown):
            return ""
        # Text already printed cannot be taken back; a decoder that rewrites earlier text only loses those edits.
        new = text[len(self.shown) :]
        self.shown = text
        return new

    def finish(self, final_text: str) -> str:
        """The end of the final answer that was held back (e.g. a last ``<`` that could have begun ``<|end|>``)."""
        rest = final_text[len(self.shown) :] if final_text.startswith(self.shown) else ""
        self.shown += rest
        return rest

    def parts(self) -> list[str | float]:
        """The answer so far as text pieces and times, cut at a stop string."""
        decoded = self.tokenizer.decode(self.token_ids, skip_special_tokens=False)
        raw = decoded.lstrip()
        for stop in self.stop_strings:
            raw = raw.split(stop)[0]
        offsets = match_token_offsets(self.tokenizer, self.token_ids, self.match_token_id, decoded)
        return answer_parts(raw, self.times, [o for o in offsets if o + len(MATCH_TOKEN) <= len(raw)])

    def _stable(self, text: str) -> str:
        text = text.rstrip().rstrip("\ufffd")
        for stop in self.stop_strings:
            for n in range(len(stop) - 1, 0, -1):
                if text.endswith(stop[:n]):
                    return text[:-n].rstrip()
        return text
