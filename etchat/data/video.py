"""Reading videos and images into uint8 frame tensors (docs/design.md §1).

Videos are sampled at a fixed rate: with ``N`` frames at average rate ``r``, the kept frame indices are
``arange(0, N, r / fps)`` rounded (numpy, half to even) and clipped to ``[0, N - 1]``; the time tag of frame ``i`` is
``round(i / r, 1)`` seconds and the duration is ``round(N / r, 3)`` seconds.

decord is the reference reader. The PyAV reader exists for platforms without a decord wheel, and reads the frames that
are resized while decoding (below), where it holds far less memory than decord; it counts frames the way decord does
(one per demuxed packet of the video stream) and converts them to RGB the same way, so both give the same indices,
tags and pixels.

With ``short_side``, frames whose short side is larger are decoded at full size one at a time and each is turned into
what the frame transform's first two steps make of it (float in [0, 1], short side resized with antialiased bilinear,
as the published preprocessing does to the whole clip): the pixels are the published ones, and memory follows the
frame count at the model's input size, with one full-size frame at a time. Frames already small enough are decoded as
stored.
"""

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from etchat.constants import CLIP_MEAN
from etchat.data.transforms import resize_short_side, short_side_size, to_float_clip

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "decord", "pyav")

# Colour used to pad images to a square: the CLIP mean, truncated to uint8 like the published preprocessing.
PAD_COLOR = tuple(int(x * 255) for x in CLIP_MEAN)


class VideoReadError(RuntimeError):
    """A video or image file is missing, empty or cannot be decoded."""


@dataclass
class VideoClip:
    # uint8 (T, H, W, C) RGB as decoded; or, when load_video's `short_side` resized them, float (T, C, h, w) in [0, 1]
    frames: torch.Tensor
    tags: list[float]  # time of each kept frame in seconds
    duration: float  # whole video length in seconds
    indices: list[int]  # index of each kept frame in the video
    avg_fps: float  # average frame rate of the video stream


def sample_frame_indices(num_frames: int, avg_fps: float, fps: float) -> list[int]:
    """Indices of the frames kept when sampling ``num_frames`` frames at ``avg_fps`` down to ``fps``."""
    indices = np.arange(0, num_frames, avg_fps / fps).round().astype("int").clip(0, num_frames - 1)
    return indices.tolist()


def frame_tags(indices: list[int], avg_fps: float) -> list[float]:
    return [round(i / avg_fps, 1) for i in indices]


def video_duration(num_frames: int, avg_fps: float) -> float:
    return round(num_frames / avg_fps, 3)


def _check_readable(path: str) -> None:
    if not os.path.isfile(path):
        raise VideoReadError(f"Cannot read {path}: no such file")
    if os.path.getsize(path) == 0:
        raise VideoReadError(f"Cannot read {path}: the file is empty (0 bytes)")


def _check_stream(path: str, num_frames: int, avg_fps: float) -> None:
    if num_frames < 1 or not avg_fps > 0:
        raise VideoReadError(f"Cannot read {path}: broken metadata ({num_frames} frames at {avg_fps} fps)")


def _check_length(path: str, duration: float, min_len: float | None, max_len: float | None) -> None:
    # None or a negative bound disables the check (the original configs use -1 for "no limit").
    if min_len is not None and min_len >= 0 and duration < min_len:
        raise ValueError(f"Video {path} is too short: {duration} s < min_len {min_len} s")
    if max_len is not None and max_len >= 0 and duration > max_len:
        raise ValueError(f"Video {path} is too long: {duration} s > max_len {max_len} s")


def stored_frame_size(path: str) -> tuple[int, int]:
    """(height, width) of the video stream's frames as stored (read from the container, nothing decoded)."""
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise VideoReadError(f"Cannot read {path}: no video stream")
            return stream.codec_context.height, stream.codec_context.width
    except av.error.FFmpegError as e:
        raise VideoReadError(f"Cannot read {path}: {e}") from e


def decode_size(height: int, width: int, short_side: int | None) -> tuple[int, int] | None:
    """(height, width) that frames of this size are resized to so their short side is ``short_side``; None to keep
    them as stored (no target, or frames no larger than it)."""
    if short_side is None or min(height, width) <= short_side:
        return None
    return short_side_size(height, width, short_side)


def resize_frame(rgb: np.ndarray, short_side: int) -> torch.Tensor:
    """One decoded uint8 (H, W, 3) frame -> float (3, h, w) in [0, 1] with its short side at ``short_side``: the
    frame transform's first two steps (`etchat.data.transforms`), done to one frame so that only one full-size frame
    is ever held."""
    return resize_short_side(to_float_clip(torch.from_numpy(rgb)[None]), short_side)[0]


def frame_image(frames: torch.Tensor, index: int) -> np.ndarray:
    """Frame ``index`` of a `VideoClip`'s frames as a uint8 (H, W, 3) picture (for thumbnails and plots)."""
    frame = frames[index]
    if frame.dtype == torch.uint8:
        return frame.numpy()
    return frame.mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def _resized_frames(indices: list[int], read_frame, short_side: int, size: tuple[int, int]) -> torch.Tensor:
    """float (T, 3, h, w) frames at ``indices``, each read at full size by ``read_frame(index)`` and resized at once;
    a frame kept twice (sampling above the video's rate) is read once."""
    frames = torch.empty(len(indices), 3, *size)
    for position, index in enumerate(indices):
        if position and index == indices[position - 1]:
            frames[position] = frames[position - 1]
        else:
            frames[position] = resize_frame(read_frame(index), short_side)
    return frames


def decord_available() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _read_decord(path: str, fps: float, min_len, max_len, num_threads: int, short_side: int | None) -> VideoClip:
    import decord

    size = decode_size(*stored_frame_size(path), short_side) if short_side else None
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
        num_frames, avg_fps = len(reader), float(reader.get_avg_fps())
    except (decord.DECORDError, RuntimeError) as e:  # decord reports most unreadable files as a RuntimeError
        raise VideoReadError(f"Cannot read {path} with decord: {e}") from e

    _check_stream(path, num_frames, avg_fps)
    duration = video_duration(num_frames, avg_fps)
    _check_length(path, duration, min_len, max_len)

    indices = sample_frame_indices(num_frames, avg_fps, fps)
    try:
        if size is None:
            frames = torch.from_numpy(reader.get_batch(indices).asnumpy())
        else:  # one full-size frame at a time, in the order get_batch would decode them
            frames = _resized_frames(indices, lambda i: reader.get_batch([i]).asnumpy()[0], short_side, size)
    except (decord.DECORDError, RuntimeError) as e:
        raise VideoReadError(f"Cannot decode frames {indices} of {path} with decord: {e}") from e
    return VideoClip(frames, frame_tags(indices, avg_fps), duration, indices, avg_fps)


def _packet_timestamps(container, stream) -> list[int | None]:
    # decord's frame count is the number of demuxed packets of the video stream; PyAV adds one empty flush packet.
    return [packet.pts for packet in container.demux(stream) if packet.size > 0]


def _decode_pyav(path: str, indices: list[int], timestamps: list, num_threads: int, skip: bool, short_side) -> dict:
    """Frames at `indices` (presentation order), decoding the stream once from the start: uint8 RGB arrays as
    stored, or with `short_side`, each resized at once by `resize_frame`.

    With `skip`, packets of frames nobody asked for are decoded with `skip_frame="NONREF"`: the decoder then drops
    them when no other frame references them, which leaves every kept frame bit-identical. Frames are placed by their
    timestamps, so this needs every packet to carry a distinct one.
    """
    import av

    wanted = set(indices)
    position_of = {pts: i for i, pts in enumerate(sorted(timestamps))} if skip else {}
    decoded = {}
    with av.open(path) as container:
        stream = container.streams.best("video")
        if num_threads != 1:
            stream.thread_type = "AUTO"
            stream.thread_count = num_threads
        codec = stream.codec_context
        position = -1
        for packet in container.demux(stream):
            if skip and packet.size > 0:
                codec.skip_frame = "DEFAULT" if position_of[packet.pts] in wanted else "NONREF"
            for frame in codec.decode(packet):
                position = position_of[frame.pts] if skip else position + 1
                if position in wanted:
                    rgb = frame.to_ndarray(format="rgb24")
                    decoded[position] = rgb if short_side is None else resize_frame(rgb, short_side)
            if len(decoded) == len(wanted) or (not skip and position >= indices[-1]):
                break
    return decoded


def _decode_skipping(path: str, indices: list[int], timestamps: list[int], num_threads: int, short_side) -> dict | None:
    """`_decode_pyav` with skipping; None when the frames' timestamps do not place them (decode without skipping)."""
    try:
        decoded = _decode_pyav(path, indices, timestamps, num_threads, True, short_side)
    except KeyError:  # a frame with a timestamp that no packet had
        return None
    return decoded if len(decoded) == len(set(indices)) else None


def _read_pyav(path: str, fps: float, min_len, max_len, num_threads: int, short_side: int | None) -> VideoClip:
    import av

    try:
        with av.open(path) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise VideoReadError(f"Cannot read {path}: no video stream")
            avg_fps = float(stream.average_rate) if stream.average_rate else 0.0
            size = decode_size(stream.codec_context.height, stream.codec_context.width, short_side)
            timestamps = _packet_timestamps(container, stream)
    except av.error.FFmpegError as e:
        raise VideoReadError(f"Cannot read {path} with PyAV: {e}") from e

    num_frames = len(timestamps)
    _check_stream(path, num_frames, avg_fps)
    duration = video_duration(num_frames, avg_fps)
    _check_length(path, duration, min_len, max_len)

    indices = sample_frame_indices(num_frames, avg_fps, fps)
    # Skipping needs distinct packet timestamps to place frames; otherwise frames are counted as they come.
    skip = None not in timestamps and len(set(timestamps)) == num_frames
    short_side = short_side if size is not None else None
    try:
        decoded = _decode_skipping(path, indices, timestamps, num_threads, short_side) if skip else None
        if decoded is None:
            decoded = _decode_pyav(path, indices, timestamps, num_threads, False, short_side)
    except av.error.FFmpegError as e:
        raise VideoReadError(f"Cannot decode {path} with PyAV: {e}") from e

    missing = sorted(set(indices) - decoded.keys())
    if missing:
        raise VideoReadError(f"Cannot decode {path} with PyAV: frames {missing} of {num_frames} could not be decoded")
    if short_side is None:
        frames = torch.from_numpy(np.stack([decoded[i] for i in indices]))
    else:
        frames = torch.stack([decoded[i] for i in indices])
    return VideoClip(frames, frame_tags(indices, avg_fps), duration, indices, avg_fps)


def load_video(
    path: str | os.PathLike,
    fps: float = 1.0,
    min_len: float | None = None,
    max_len: float | None = None,
    num_threads: int = 1,
    backend: str = "auto",
    short_side: int | None = None,
) -> VideoClip:
    """Decode the frames of ``path`` sampled at ``fps`` frames per second.

    ``min_len`` / ``max_len`` (seconds) reject videos that are too short / long with a ValueError. ``backend`` is
    ``"decord"``, ``"pyav"`` or ``"auto"`` (decord when it is installed and can read the file, else PyAV; PyAV for
    frames that ``short_side`` resizes).
    ``short_side`` resizes larger frames one at a time as they are decoded, giving float frames (see the module
    docstring). Unreadable files raise
    VideoReadError.
    """
    path = os.fspath(path)
    if backend not in BACKENDS:
        raise ValueError(f"Unknown video backend {backend!r}, expected one of {BACKENDS}")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps} (reading {path})")
    _check_readable(path)

    if backend == "pyav" or (backend == "auto" and not decord_available()):
        return _read_pyav(path, fps, min_len, max_len, num_threads, short_side)
    if backend == "auto" and short_side is not None and decode_size(*stored_frame_size(path), short_side):
        # Frames to resize: PyAV, one full-size frame at a time. decord gives the same pixels (both convert with
        # swscale) but, reading 4K frames one by one next to torch's resizing, holds ~1.7 GB for a 60 s clip where
        # PyAV holds ~0.3 GB (docs/benchmarks.md, "memory").
        return _read_pyav(path, fps, min_len, max_len, num_threads, short_side)
    if not decord_available():
        raise ImportError(f"backend='decord' was requested for {path} but decord is not installed")

    try:
        return _read_decord_with_retry(path, fps, min_len, max_len, num_threads, short_side)
    except VideoReadError as e:
        if backend == "decord":
            raise
        # decord rejects a few files that FFmpeg decodes fine (e.g. some odd frame sizes); PyAV samples the same frames.
        logger.warning("%s Falling back to PyAV.", e)
        return _read_pyav(path, fps, min_len, max_len, num_threads, short_side)


def _read_decord_with_retry(path: str, fps: float, min_len, max_len, num_threads: int, short_side) -> VideoClip:
    try:
        return _read_decord(path, fps, min_len, max_len, num_threads, short_side)
    except VideoReadError:
        if num_threads == 1:
            raise
        # Multi-threaded decord fails on some files that it reads fine with a single thread.
        logger.warning("decord failed on %s with %d threads, retrying with one thread", path, num_threads)
        return _read_decord(path, fps, min_len, max_len, 1, short_side)


def load_image(path: str | os.PathLike, pad_to_square: bool = False) -> torch.Tensor:
    """Read an image as a one-frame video: uint8 (1, H, W, 3), optionally padded to a square with the CLIP mean."""
    path = os.fspath(path)
    _check_readable(path)
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except OSError as e:  # PIL.UnidentifiedImageError and truncated-file errors are OSErrors
        raise VideoReadError(f"Cannot read image {path}: {e}") from e

    if pad_to_square and image.width != image.height:
        side = max(image.width, image.height)
        square = Image.new("RGB", (side, side), PAD_COLOR)
        square.paste(image, ((side - image.width) // 2, (side - image.height) // 2))
        image = square
    return torch.from_numpy(np.array(image)).unsqueeze(0)
