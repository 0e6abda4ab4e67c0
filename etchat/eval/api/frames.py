"""What an endpoint is shown of a video: sampled frames as JPEG data URLs with their times, or the whole file
(docs/design.md §19).

Frames are decoded by the project's reader (`etchat.data.video.load_video`), so a frame's time is the tag the rest of
the project gives it (``round(index / fps, 1)`` seconds). ``num_frames`` frames are spread evenly over the video, the
first and the last frame included (``linspace(0, N - 1, num_frames)`` of its ``N`` frames, as video toolkits sample);
``fps`` reads at a fixed rate instead (at most ``max_frames``, thinned evenly).
"""

from __future__ import annotations

import base64
import io
import os
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from etchat.data.video import VideoReadError, load_video

JPEG_QUALITY = 90


@dataclass
class SampledFrames:
    images: list[str]  # data:image/jpeg;base64 URLs
    times: list[float]  # seconds, one per image
    duration: float  # the whole video's length in seconds


@dataclass(frozen=True)
class FrameSampling:
    num_frames: int | None = 8  # frames spread evenly over the video (the E.T. Bench authors' 8 for GPT-4o)
    fps: float | None = None  # or: frames per second
    max_frames: int | None = None  # with fps: at most this many, thinned evenly
    short_side: int | None = 448  # larger frames are scaled down to this short side; None: as stored

    def __post_init__(self):
        if (self.num_frames is None) == (self.fps is None):
            raise ValueError("give either a number of frames or a frame rate")
        if self.num_frames is not None and self.num_frames < 1:
            raise ValueError(f"the number of frames must be >= 1, got {self.num_frames}")
        if self.fps is not None and not self.fps > 0:
            raise ValueError(f"the frame rate must be > 0, got {self.fps}")


def probe_stream(path: str) -> tuple[int, float]:
    """(frame count, average frame rate) of a video's stream, from its container, without decoding it."""
    try:
        with av.open(path) as container:
            stream = container.streams.video[0]
            rate = float(stream.average_rate or 0)
            frames = stream.frames or (round(container.duration / 1_000_000 * rate) if container.duration else 0)
    except (av.FFmpegError, IndexError, OSError) as error:
        raise VideoReadError(f"cannot read {path}: {error}") from error
    if not frames or not rate:
        raise VideoReadError(f"{path}: the container gives no frame count or frame rate")
    return frames, rate


def probe_duration(path: str) -> float:
    frames, rate = probe_stream(path)
    return frames / rate


def uniform_rate(frames: int, rate: float, keep: int) -> float:
    """The sampling rate whose frames (``arange(0, frames, rate / fps)``) are ``keep`` evenly spaced frames, the first
    and the last included (all frames when there are no more than ``keep``)."""
    if frames <= keep:
        return rate
    if keep == 1:
        return rate / frames
    return rate * (keep - 1) / (frames - 1)


def evenly_spaced(count: int, keep: int) -> list[int]:
    """``keep`` positions out of ``count``, evenly spaced with the first and the last (all when count <= keep)."""
    if count <= keep:
        return list(range(count))
    return np.linspace(0, count - 1, keep).round().astype(int).tolist()


def jpeg_data_url(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def sample_frames(path: str | os.PathLike, sampling: FrameSampling) -> SampledFrames:
    path = os.fspath(path)
    if sampling.num_frames is not None:
        fps, keep = uniform_rate(*probe_stream(path), sampling.num_frames), sampling.num_frames
    else:
        fps, keep = sampling.fps, sampling.max_frames
    clip = load_video(path, fps=fps, short_side=sampling.short_side)
    chosen = evenly_spaced(len(clip.tags), keep) if keep else list(range(len(clip.tags)))
    frames = clip.frames.numpy()
    return SampledFrames([jpeg_data_url(frames[i]) for i in chosen], [clip.tags[i] for i in chosen], clip.duration)


def video_data_url(path: str | os.PathLike) -> str:
    """The whole file as a data URL, for endpoints that take videos (vLLM's ``video_url``)."""
    return "data:video/mp4;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
