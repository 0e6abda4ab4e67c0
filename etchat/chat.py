"""Ask E.T. Chat about your own video on the command line.

    python -m etchat.chat --model model_zoo/ETChat-Phi3-Mini-Stage-3 --video clip.mp4 "When does the dog jump?"
    python -m etchat.chat --model ... --video clip.mp4 --json "When does the dog jump?"
    python -m etchat.chat --model ... --video clip.mp4 --plot timeline.png "When does the dog jump?"
    python -m etchat.chat --model ... --video clip.mp4          # no question: an interactive, multi-turn chat

The answer is printed as it is generated. Each `<vid>` token is shown as the time (mm:ss.s) of the frame it matched
at the step that produced it. ``--json`` prints one JSON object per question instead: the answer, the raw answer
(with `<vid>`), the matched times, frame indices, the similarity of every `<vid>` over the frames and the frame
times. ``--plot`` draws the video's timeline with thumbnails, the matched times and the similarity curves (in the
interactive chat, one file per question: ``timeline_1.png``, ``timeline_2.png``...).

Conversations: the video is encoded again for every question, because the Q-Former reads the question. Earlier
turns go into the prompt with the model's template (phi3); the `<vid>` tokens of earlier answers are written there as
plain seconds (``12`` or ``12.5``), the way the published model writes its answers at 1 fps, so the model reads its
own times back as text. When the history would not fit the context, the oldest turns are left out. In the
interactive chat, ``/reset`` starts a new conversation about the same video and ``/quit`` (or Ctrl-D) ends it.

Bad input (a missing, unreadable or too long video, an empty question, a folder that is not an E.T. Chat
checkpoint) is reported in one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from etchat.constants import MATCH_TOKEN, VIDEO_PLACEHOLDER
from etchat.data.conversation import get_conv
from etchat.data.tokenization import (
    fill_match_tokens,
    format_seconds,
    match_positions,
    match_token_offsets,
    tokenize,
)
from etchat.data.transforms import build_transform
from etchat.data.video import VideoClip, VideoReadError, load_video

if TYPE_CHECKING:
    from etchat.model.generation import GenerationSettings, MatchedAnswer

# The model code (transformers) is imported where it is first needed, so that bad input fails in a moment.

logger = logging.getLogger(__name__)

EXIT_BAD_INPUT = 2
DTYPE_NAMES = ("float32", "float16", "bfloat16")
SIM_DECIMALS = 6
NUM_THUMBNAILS = 8
# Room kept for the answer when old turns must leave the prompt.
ANSWER_RESERVE = 256
QUIT_COMMANDS = ("/quit", "/exit")
RESET_COMMAND = "/reset"

TextCallback = Callable[[str], None]


class ChatInputError(ValueError):
    """Input the chat cannot use (video, question, checkpoint); shown to the user as one line."""


# --------------------------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------------------
# A conversation about one video
# --------------------------------------------------------------------------------------------------------------------


def check_question(question: str | None) -> str:
    question = (question or "").strip()
    if not question:
        raise ChatInputError("the question is empty")
    for token in (VIDEO_PLACEHOLDER, MATCH_TOKEN):
        if token in question:
            raise ChatInputError(f"the question may not contain {token} (the chat adds the video itself)")
    return question


def probe_video(path: str) -> None:
    """Raise a VideoReadError naming ``path`` when FFmpeg finds no video stream in it.

    Checked before decoding because decord reports a corrupt file on stderr itself, before the reader can fall back.
    """
    import av

    try:
        with av.open(path) as container:
            if not container.streams.video:
                raise VideoReadError(f"Cannot read {path}: no video stream")
    except av.error.FFmpegError as error:
        reason = getattr(error, "strerror", None) or str(error)
        raise VideoReadError(f"Cannot read {path}: {reason}") from error


def read_video(path: str, fps: float = 1.0, max_len: float | None = 600.0) -> VideoClip:
    """Decode ``path`` at ``fps``; a missing, unreadable or too long video is a ChatInputError naming the file."""
    try:
        if Path(path).is_file() and Path(path).stat().st_size > 0:  # load_video words the other cases itself
            probe_video(path)
        return load_video(path, fps=fps, max_len=max_len)
    except (VideoReadError, ValueError) as error:
        raise ChatInputError(str(error)) from error


def build_chat_prompt(history: list[tuple[str, str]], question: str, conv_name: str = "phi3") -> str:
    """The prompt of ``question`` after the (question, answer) ``history``; the video goes in the first user turn."""
    conv = get_conv(conv_name)
    for k, (user, reply) in enumerate([*history, (question, None)]):
        conv.append_message(conv.roles[0], VIDEO_PLACEHOLDER + "\n" + user if k == 0 else user)
        conv.append_message(conv.roles[1], reply)
    return conv.get_prompt()


def context_length(model, tokenizer) -> int:
    lengths = [getattr(model.config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    return min(n for n in lengths if n) if any(lengths) else 2048


class VideoChat:
    """A conversation about one decoded video: each ``ask`` sees the earlier turns of ``history``."""

    def __init__(
        self,
        model,
        tokenizer,
        clip: VideoClip,
        settings: GenerationSettings,
        history: list[ChatAnswer] | None = None,
        generator: torch.Generator | None = None,
    ):
        self.model, self.tokenizer, self.clip, self.settings = model, tokenizer, clip, settings
        self.history = list(history or [])
        self.generator = generator
        transform = build_transform(model.config.vision_processor, inference=True)
        self.video = transform(clip.frames).to(next(model.parameters()).dtype)

    def reset(self) -> None:
        self.history = []

    def prompt(self, question: str) -> str:
        """The prompt for ``question``, leaving out the oldest turns while it would not fit the context."""
        budget = context_length(self.model, self.tokenizer) - min(self.settings.max_new_tokens, ANSWER_RESERVE)
        turns = [(a.question, a.history_text()) for a in self.history]
        from etchat.eval.infer_etbench import conv_type

        conv_name = conv_type(self.model)
        while True:
            prompt = build_chat_prompt(turns, question, conv_name)
            if not turns or len(tokenize(prompt, self.tokenizer)) - 1 + len(self.clip.tags) <= budget:
                break
            logger.warning("The conversation is too long for the context: leaving out its oldest turn")
            turns = turns[1:]
        return prompt

    def ask(self, question: str, on_text: TextCallback | None = None) -> ChatAnswer:
        """Answer ``question``; ``on_text`` receives the answer's text as it grows (each call the new piece)."""
        from etchat.model.generation import GenerationRequest, generate

        question = check_question(question)
        request = GenerationRequest(
            input_ids=tokenize(self.prompt(question), self.tokenizer),
            video=self.video,
            query=question,
            tags=self.clip.tags,
        )
        stream = AnswerStream(self.tokenizer, self.model.config.match_token_id, self.clip.tags, self.settings)

        def on_token(_sample: int, token_id: int, match) -> None:
            text = stream.push(token_id, match)
            if text and on_text is not None:
                on_text(text)

        matched = generate(self.model, self.tokenizer, [request], self.settings, self.generator, on_token=on_token)[0]
        answer = ChatAnswer.from_matched(question, matched, self.clip.tags)
        rest = stream.finish(answer.text)
        if rest and on_text is not None:
            on_text(rest)
        self.history.append(answer)
        return answer


# --------------------------------------------------------------------------------------------------------------------
# Model, settings, plot
# --------------------------------------------------------------------------------------------------------------------


def resolve_device_dtype(device: str | None, dtype: str | None) -> tuple[str, torch.dtype]:
    """Default device: cuda when available; default dtype: float16 on CUDA, float32 elsewhere."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("float16" if torch.device(device).type == "cuda" else "float32")
    return device, getattr(torch, dtype)


def load_chat_model(path: str, device: str | None = None, dtype: str | None = None):
    """(model in eval mode, tokenizer); a folder that is not a loadable E.T. Chat checkpoint is a ChatInputError."""
    if not Path(path).is_dir():
        raise ChatInputError(f"{path}: no such checkpoint folder")
    from etchat.model.loading import CheckpointMismatchError, NotETChatCheckpointError, load_etchat

    device, torch_dtype = resolve_device_dtype(device, dtype)
    logger.info("Loading %s on %s (%s)", path, device, torch_dtype)
    try:
        model, tokenizer = load_etchat(path, dtype=torch_dtype, device=device)
    except NotETChatCheckpointError as error:
        raise ChatInputError(str(error)) from error
    except CheckpointMismatchError as error:
        raise ChatInputError(f"the checkpoint does not match the model: {error}") from error
    except (OSError, ValueError, KeyError) as error:  # an unknown model type, unreadable files
        raise ChatInputError(f"{path} is not an E.T. Chat checkpoint: {error}") from error
    return model.eval(), tokenizer


def chat_settings(
    model, greedy: bool = False, temperature: float = 0.2, max_new_tokens: int = 1024
) -> GenerationSettings:
    """The published decoding (sampling, top-k 50, stop at the template's end), with these overrides."""
    if temperature <= 0:
        raise ChatInputError(f"--temperature must be > 0, got {temperature} (use --greedy for greedy decoding)")
    if max_new_tokens < 1:
        raise ChatInputError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
    from etchat.eval.infer_etbench import base_settings

    settings = base_settings(model, max_new_tokens=max_new_tokens, greedy=greedy)
    return replace(settings, temperature=temperature)


def make_generator(device, seed: int | None) -> torch.Generator | None:
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(seed)


def clip_thumbnails(clip: VideoClip, count: int = NUM_THUMBNAILS) -> list[tuple[float, np.ndarray]]:
    """``count`` evenly spread (time, frame) pairs of the decoded clip."""
    picks = np.linspace(0, len(clip.tags) - 1, min(count, len(clip.tags))).round().astype(int)
    return [(clip.tags[i], clip.frames[i].numpy()) for i in picks]


def plot_answer(answer: ChatAnswer, clip: VideoClip, out_path: str | Path) -> Path:
    """The video's timeline with thumbnails, the matched times and each `<vid>`'s similarity curve."""
    from etchat.eval.plot import plot_timeline

    return plot_timeline(
        clip.duration,
        out_path,
        times=answer.times,
        similarities=answer.similarities or None,
        frame_times=clip.tags,
        thumbnails=clip_thumbnails(clip),
        title=f"Q: {answer.question}  A: {answer.text}",
    )


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """Options shared by the chat and the web demo."""
    parser.add_argument("--model", required=True, help="E.T. Chat checkpoint folder")
    parser.add_argument("--fps", type=float, default=1.0, help="frames sampled per second of video")
    parser.add_argument("--max_video_len", type=float, default=600.0, help="longest video in seconds (-1: no limit)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    parser.add_argument("--dtype", choices=DTYPE_NAMES, default=None, help="default: float16 on CUDA, else float32")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    parser.add_argument("--temperature", type=float, default=0.2, help="sampling temperature (published: 0.2)")
    parser.add_argument("--max_new_tokens", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=None, help="seed of the sampling (default: random)")
    parser.add_argument("--verbose", action="store_true", help="log progress (and show tracebacks of errors)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.chat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", nargs="?", default=None, help="the question; without it, an interactive chat")
    parser.add_argument("--video", required=True, help="the video file")
    add_model_args(parser)
    parser.add_argument("--json", action="store_true", help="print the answer and its matches as JSON")
    parser.add_argument("--plot", metavar="PNG", help="write the answer's timeline plot here")
    return parser.parse_args(argv)


def numbered_path(path: str, number: int | None) -> Path:
    path = Path(path)
    return path if number is None else path.with_name(f"{path.stem}_{number}{path.suffix or '.png'}")


def answer_once(chat: VideoChat, question: str, args: argparse.Namespace, plot_number: int | None = None) -> None:
    def print_text(text: str) -> None:
        print(text, end="", flush=True)

    answer = chat.ask(question, on_text=None if args.json else print_text)
    if args.json:
        print(json.dumps({"video": args.video, "duration": chat.clip.duration, **answer.to_json()}), flush=True)
    else:
        print(flush=True)
    if args.plot:
        path = plot_answer(answer, chat.clip, numbered_path(args.plot, plot_number))
        print(f"timeline plot: {path}", file=sys.stderr)


def interactive(chat: VideoChat, args: argparse.Namespace) -> None:
    # With --json, stdout carries only the JSON lines; the dialogue goes to stderr.
    console = sys.stderr if args.json else sys.stdout
    duration = format_seconds(chat.clip.duration)
    print(f"Chatting about {args.video} ({duration}). /reset: new conversation, /quit: end.", file=console)
    turn = 0
    while True:
        print("\nYou: ", end="", file=console, flush=True)
        try:
            question = input().strip()
        except EOFError:
            print(file=console)
            return
        if question in QUIT_COMMANDS:
            return
        if question == RESET_COMMAND:
            chat.reset()
            print("(new conversation)", file=console)
            continue
        if not question:
            continue
        try:
            check_question(question)
        except ChatInputError as error:
            print(f"error: {error}", file=sys.stderr)
            continue
        turn += 1
        if not args.json:
            print("E.T. Chat: ", end="", flush=True)
        answer_once(chat, question, args, plot_number=turn)


def run(args: argparse.Namespace) -> None:
    if args.question is not None:
        check_question(args.question)
    clip = read_video(args.video, args.fps, args.max_video_len)
    model, tokenizer = load_chat_model(args.model, args.device, args.dtype)
    settings = chat_settings(model, args.greedy, args.temperature, args.max_new_tokens)
    chat = VideoChat(model, tokenizer, clip, settings, generator=make_generator(model.device, args.seed))
    if args.question is None:
        interactive(chat, args)
    else:
        answer_once(chat, args.question, args)


def report_input_error(prog: str, error: Exception, verbose: bool) -> int:
    if verbose:
        logger.exception("Input error")
    message = " ".join(str(error).split())  # one line, whatever the message holds
    print(f"{prog}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar would interleave with the answer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    try:
        run(args)
    except ChatInputError as error:
        return report_input_error("etchat.chat", error, args.verbose)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
