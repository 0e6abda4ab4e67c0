"""E.T.-Bench-shaped workloads: sample shapes, generated mp4 videos, prompts and stage-3 training samples.

Shapes are drawn from a seeded generator so every configuration of a run (and every rerun) sees the same samples.
Videos are cached on disk by shape, so a rerun does not encode them again.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import asdict, dataclass
from fractions import Fraction

import numpy as np
import torch

from etchat.constants import MATCH_TOKEN, VIDEO_PLACEHOLDER
from etchat.data.conversation import GPT, HUMAN, get_conv, preprocess
from etchat.data.tokenization import tokenize

logger = logging.getLogger(__name__)

DEFAULT_VIDEO_DIR = "work_dirs/bench/videos"
# Words of E.T. Bench-like instructions; with the tiny tokenizer a word is a few tokens.
WORDS = (
    "watch the video carefully and find the moment when a person opens door walks into room picks up cup "
    "put it on table localize event according to query answer format should be start time end time seconds "
    "summarize highlight segments describe each step cooking recipe which option best describes action happens"
).split()


@dataclass
class SampleShape:
    """One benchmark sample: frames at 1 fps, prompt and answer lengths in tokens, `<vid>` times in the prompt."""

    index: int
    num_frames: int
    prompt_tokens: int
    answer_tokens: int
    src: list[float]
    video: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def draw_shapes(
    num_samples: int,
    frames: tuple[int, int],
    prompt_tokens: tuple[int, int],
    answer_tokens: tuple[int, int],
    seed: int = 0,
    src_fraction: float = 0.3,
) -> list[SampleShape]:
    """Uniform draws in each (low, high) range; a `src_fraction` of the prompts reference two times with `<vid>`."""
    rng = random.Random(seed)
    shapes = []
    for index in range(num_samples):
        num_frames = rng.randint(*frames)
        src = sorted(float(rng.randrange(num_frames)) for _ in range(2)) if rng.random() < src_fraction else []
        shapes.append(SampleShape(index, num_frames, rng.randint(*prompt_tokens), rng.randint(*answer_tokens), src))
    return shapes


# ---- videos ------------------------------------------------------------------------------------------------------
def video_path(video_dir: str, seconds: int, fps: float, short_side: int) -> str:
    height, width = short_side, _round_even(short_side * 4 / 3)
    return os.path.join(video_dir, f"bench_{seconds}s_{fps:g}fps_{height}x{width}.mp4")


def _round_even(x: float) -> int:
    return int(round(x / 2)) * 2


def encode_h264(path: str, frames, fps: float, size: tuple[int, int], preset: str, crf: int) -> None:
    """Encode ``frames`` (uint8 RGB arrays of ``size`` = (height, width)) as an H.264 mp4, written under a temporary
    name and renamed, so that a run killed mid-write leaves no truncated video in the cache."""
    import av

    tmp = path + ".part.mp4"
    with av.open(tmp, "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": preset, "crf": str(crf)}
        for pixels in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    os.replace(tmp, path)


def write_video(path: str, seconds: int, fps: float, short_side: int, seed: int = 0) -> None:
    """A 4:3 H.264 video of moving colour gradients with noise: unlike flat colours it costs a real decode."""
    height, width = short_side, _round_even(short_side * 4 / 3)
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width]

    def frames():
        for i in range(int(round(seconds * fps))):
            channels = [(cols * 2 + i * 5) % 256, (rows * 2 + i * 7) % 256, (rows + cols + i * 11) % 256]
            noise = rng.integers(-12, 13, (height, width, 3))
            yield np.clip(np.stack(channels, -1) + noise, 0, 255).astype(np.uint8)

    encode_h264(path, frames(), fps, (height, width), preset="veryfast", crf=28)


def ensure_videos(shapes: list[SampleShape], video_dir: str, fps: float, short_side: int) -> None:
    """Give each shape a video of `num_frames` seconds (so `num_frames` frames at 1 fps), writing missing ones."""
    from tqdm import tqdm

    os.makedirs(video_dir, exist_ok=True)
    missing = []
    for shape in shapes:
        shape.video = video_path(video_dir, shape.num_frames, fps, short_side)
        if not os.path.exists(shape.video) and shape.video not in missing:
            missing.append(shape.video)
    by_path = {s.video: s.num_frames for s in shapes}
    for path in tqdm(missing, desc="writing benchmark videos", disable=not missing):
        write_video(path, by_path[path], fps, short_side)


# ---- prompts -----------------------------------------------------------------------------------------------------
def _words_for_tokens(tokenizer, num_tokens: int, rng: random.Random, prefix: str = "") -> str:
    """Random instruction words whose tokenization (after `prefix`) has about `num_tokens` tokens."""
    words: list[str] = []
    while len(tokenizer(prefix + " ".join(words), add_special_tokens=False).input_ids) < num_tokens:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def build_question(shape: SampleShape, tokenizer, seed: int = 0) -> str:
    """The user question of an E.T. Bench `vid` annotation: instruction words, with a `<vid>` per src time."""
    rng = random.Random(seed * 100003 + shape.index)
    question = _words_for_tokens(tokenizer, max(1, shape.prompt_tokens - 40), rng)
    if shape.src:
        question += f" The event happens from {MATCH_TOKEN} to {MATCH_TOKEN}."
    return question


def build_prompt_ids(shape: SampleShape, tokenizer, seed: int = 0) -> tuple[torch.Tensor, str]:
    """Prompt ids (phi3 template, open assistant turn) padded with words up to `prompt_tokens`; and the question."""
    question = build_question(shape, tokenizer, seed)
    conv = get_conv("phi3")
    conv.append_message(conv.roles[0], VIDEO_PLACEHOLDER + "\n" + question)
    conv.append_message(conv.roles[1], None)
    prompt = conv.get_prompt()
    input_ids = tokenize(prompt, tokenizer)
    if input_ids.numel() < shape.prompt_tokens:
        # Top up inside the question so the template's tail stays last.
        rng = random.Random(seed * 100003 + shape.index + 1)
        extra = _words_for_tokens(tokenizer, shape.prompt_tokens - input_ids.numel(), rng)
        question = extra + " " + question
        conv = get_conv("phi3")
        conv.append_message(conv.roles[0], VIDEO_PLACEHOLDER + "\n" + question)
        conv.append_message(conv.roles[1], None)
        input_ids = tokenize(conv.get_prompt(), tokenizer)
    return input_ids, question


# ---- stage-3 training samples ------------------------------------------------------------------------------------
def build_training_sample(shape: SampleShape, tokenizer, seed: int = 0) -> dict:
    """A stage-3 sample (phi3 template, `<vid>` in question and answer, src/tgt seconds) with random frames.

    Returns the keys `DataCollator` batches: input_ids, labels, image (T,3,224,224 already transformed), query, src,
    tgt, tag.
    """
    rng = random.Random(seed * 100003 + shape.index)
    question = build_question(shape, tokenizer, seed)
    tgt = sorted(float(rng.randrange(shape.num_frames)) for _ in range(2))
    answer = _words_for_tokens(tokenizer, max(1, shape.answer_tokens - 12), rng)
    answer += f" It happens from {MATCH_TOKEN} to {MATCH_TOKEN}."
    conversations = [{"from": HUMAN, "value": VIDEO_PLACEHOLDER + "\n" + question}, {"from": GPT, "value": answer}]
    ids = preprocess(conversations, tokenizer, "phi3", has_video=True, name=f"bench sample {shape.index}")
    generator = torch.Generator().manual_seed(seed * 100003 + shape.index)
    return dict(
        input_ids=ids["input_ids"],
        labels=ids["labels"],
        image=torch.randn(shape.num_frames, 3, 224, 224, generator=generator),
        query=question,
        src=list(shape.src),
        tgt=tgt,
        tag=[float(t) for t in range(shape.num_frames)],
    )
