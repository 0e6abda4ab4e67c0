"""A conversation about one video, the library under the chat CLI and the web demo.

The video is encoded again for every question, because the Q-Former reads the question. Earlier turns go into the
prompt with the model's template; the `<vid>` tokens of earlier answers are written there as plain seconds (``12`` or
``12.5``), the way the published model writes its answers at 1 fps, so the model reads its own times back as text.
When the history would not fit the context, the oldest turns are left out.

Input a user can get wrong (a missing, unreadable or too long video, an empty question, a checkpoint that is neither a
folder nor a Hub repo in reach, or not an E.T. Chat checkpoint) raises `ChatInputError` with a one-line message naming
the file.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from etchat.cli import resolve_device_dtype
from etchat.constants import MATCH_TOKEN, VIDEO_PLACEHOLDER
from etchat.data.conversation import chat_prompt
from etchat.data.tokenization import tokenize
from etchat.data.transforms import build_transform
from etchat.data.video import VideoClip, VideoReadError, frame_image, load_video
from etchat.hub import ModelNotFoundError, resolve_model
from etchat.serve.answer import AnswerStream, ChatAnswer, TextCallback

if TYPE_CHECKING:
    from etchat.model.generation import GenerationSettings

# The model code (transformers) is imported where it is first needed, so that bad input fails in a moment.

logger = logging.getLogger(__name__)

NUM_THUMBNAILS = 8
# Frames are decoded with this short side unless the model's transform asks for another (the published input size).
DEFAULT_FRAME_SIZE = 224
# A question longer than this is refused before anything is tokenized (a prompt must also fit the context).
MAX_QUESTION_CHARS = 2000
# Room kept for the answer when old turns must leave the prompt.
ANSWER_RESERVE = 256


class ChatInputError(ValueError):
    """Input the chat cannot use (video, question, checkpoint); shown to the user as one line."""


def check_question(question: str | None, max_chars: int = MAX_QUESTION_CHARS) -> str:
    question = (question or "").strip()
    if not question:
        raise ChatInputError("the question is empty")
    if len(question) > max_chars:
        raise ChatInputError(f"the question has {len(question)} characters, more than the limit of {max_chars}")
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


def read_video(
    path: str, fps: float = 1.0, max_len: float | None = 600.0, short_side: int = DEFAULT_FRAME_SIZE
) -> VideoClip:
    """Decode ``path`` at ``fps``, frames no larger than ``short_side`` on their short side (memory follows the frame
    count, not the source resolution); a missing, unreadable or too long video is a ChatInputError naming the file."""
    try:
        if Path(path).is_file() and Path(path).stat().st_size > 0:  # load_video words the other cases itself
            probe_video(path)
        return load_video(path, fps=fps, max_len=max_len, short_side=short_side)
    except (VideoReadError, ValueError) as error:
        raise ChatInputError(str(error)) from error


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
        seed: int | None = None,
        max_question_chars: int = MAX_QUESTION_CHARS,
    ):
        from etchat.model.generation import seeded_generator

        self.model, self.tokenizer, self.clip, self.settings = model, tokenizer, clip, settings
        self.history = list(history or [])
        self.generator = seeded_generator(model.device, seed)
        self.max_question_chars = max_question_chars
        transform = build_transform(model.config.vision_processor, inference=True)
        self.video = transform(clip.frames).to(next(model.parameters()).dtype)

    def reset(self) -> None:
        self.history = []

    def prompt(self, question: str) -> str:
        """The prompt for ``question``, leaving out the oldest turns while it would not fit the context; a question
        that does not fit even alone is a ChatInputError."""
        from etchat.model.generation import model_conv_type

        budget = context_length(self.model, self.tokenizer) - min(self.settings.max_new_tokens, ANSWER_RESERVE)
        turns = [(a.question, a.history_text()) for a in self.history]
        conv_name = model_conv_type(self.model)
        while True:
            prompt = chat_prompt(turns, question, conv_name)
            length = len(tokenize(prompt, self.tokenizer)) - 1 + len(self.clip.tags)
            if length <= budget:
                return prompt
            if not turns:
                raise ChatInputError(
                    f"the question and the video's {len(self.clip.tags)} frames need {length} positions; the model has "
                    f"{budget} left for them (context minus room for the answer): ask a shorter question"
                )
            logger.warning("The conversation is too long for the context: leaving out its oldest turn")
            turns = turns[1:]

    def ask(self, question: str, on_text: TextCallback | None = None) -> ChatAnswer:
        """Answer ``question``; ``on_text`` receives the answer's text as it grows (each call the new piece)."""
        from etchat.model.generation import GenerationRequest, generate

        question = check_question(question, self.max_question_chars)
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


def frame_size(model) -> int:
    """The short side the model's frame transform works at."""
    return build_transform(model.config.vision_processor, inference=True).size


def load_chat_model(path: str, device: str | None = None, dtype: str | None = None, revision: str | None = None):
    """(model in eval mode, tokenizer) of a checkpoint folder or Hub repo id; one that cannot be found or is not a
    loadable E.T. Chat checkpoint is a ChatInputError."""
    try:
        path = resolve_model(path, revision).path
    except ModelNotFoundError as error:
        raise ChatInputError(str(error)) from error
    from etchat.model.loading import (
        CheckpointFileError,
        CheckpointMismatchError,
        NotETChatCheckpointError,
        load_etchat,
    )

    device, torch_dtype = resolve_device_dtype(device, dtype)
    logger.info("Loading %s on %s (%s)", path, device, torch_dtype)
    try:
        model, tokenizer = load_etchat(path, dtype=torch_dtype, device=device)
    except (NotETChatCheckpointError, CheckpointFileError, ModelNotFoundError) as error:
        raise ChatInputError(str(error)) from error
    except CheckpointMismatchError as error:
        raise ChatInputError(f"the checkpoint does not match the model: {error}") from error
    except (OSError, ValueError, KeyError) as error:  # an unknown model type, unreadable files
        raise ChatInputError(f"{path} is not an E.T. Chat checkpoint: {error}") from error
    return model.eval(), tokenizer


def chat_settings(
    model, greedy: bool = False, temperature: float | None = None, max_new_tokens: int = 1024
) -> GenerationSettings:
    """The published decoding (sampling at temperature 0.2, top-k 50, stop at the template's end), with these
    overrides."""
    from etchat.model.generation import published_settings

    settings = published_settings(model, max_new_tokens, greedy)
    if temperature is not None:
        settings.temperature = temperature
    if settings.temperature <= 0:
        raise ChatInputError(f"--temperature must be > 0, got {temperature} (use --greedy for greedy decoding)")
    if max_new_tokens < 1:
        raise ChatInputError(f"--max_new_tokens must be >= 1, got {max_new_tokens}")
    return settings


def clip_thumbnails(clip: VideoClip, count: int = NUM_THUMBNAILS) -> list[tuple[float, np.ndarray]]:
    """``count`` evenly spread (time, frame) pairs of the decoded clip."""
    picks = np.linspace(0, len(clip.tags) - 1, min(count, len(clip.tags))).round().astype(int)
    return [(clip.tags[i], frame_image(clip.frames, i)) for i in picks]


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
