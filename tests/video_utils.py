"""Test helper: write short videos whose frames are flat colours that encode the frame index.

Each channel takes one of six well separated levels (0, 51, ..., 255), so 216 indices can be told apart even after
lossy compression shifts a value by a few levels. ``decode_frame_index`` recovers the index from a decoded frame.
"""

from collections.abc import Callable
from fractions import Fraction

import av
import numpy as np

LEVELS = 6
LEVEL_STEP = 51  # 255 / (LEVELS - 1)
NUM_CODES = LEVELS**3


def index_color(index: int) -> tuple[int, int, int]:
    """Flat RGB colour encoding ``index`` (modulo 216) in base 6, one digit per channel."""
    code = index % NUM_CODES
    digits = (code // LEVELS**2, (code // LEVELS) % LEVELS, code % LEVELS)
    return tuple(d * LEVEL_STEP for d in digits)


def decode_frame_index(frame: np.ndarray) -> int:
    """Index encoded by ``index_color`` in a decoded (H, W, 3) frame, from its mean colour."""
    mean = np.asarray(frame, dtype=np.float64).reshape(-1, 3).mean(0)
    digits = np.clip(np.round(mean / LEVEL_STEP), 0, LEVELS - 1).astype(int)
    return int(digits[0] * LEVELS**2 + digits[1] * LEVELS + digits[2])


def write_test_video(
    path,
    num_frames: int,
    fps: float | Fraction,
    size: tuple[int, int] = (48, 64),
    color_fn: Callable[[int], tuple[int, int, int]] = index_color,
    codec: str = "libx264",
) -> None:
    """Encode ``num_frames`` flat-colour frames of ``size`` (h, w) at ``fps`` into an mp4 at ``path``."""
    height, width = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(100000))
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "5"}  # near lossless keeps the flat colours within a few levels
        for index in range(num_frames):
            pixels = np.empty((height, width, 3), dtype=np.uint8)
            pixels[:] = color_fn(index)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
