"""How far behind its source a compressed video runs, for each `compress_videos` mode (docs/design.md §14).

    python -m etchat.bench.compression_shift [--seconds 10] [--work_dir DIR]

For sources of 24, 25, 29.97, 30 and 60 fps (320 x 240, each frame showing its index as ten black or white bars),
both modes compress to 3 fps and short side 224. Every output frame is decoded and its bars read back: the shift of
an output frame is its time (pts) minus the time of the source frame it shows (positive: the output shows older
content). Then both the source and the output are read at 1 fps as inference reads them (`load_video`), and the
frames whose pictures differ are counted. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np

from etchat.bench.report import format_table
from etchat.data.compress_videos import CompressOptions, compress_video
from etchat.data.video import load_video

RATES = (Fraction(24), Fraction(25), Fraction(30000, 1001), Fraction(30), Fraction(60))
BITS = 10
SIZE = (240, 320)


def bars(index: int) -> np.ndarray:
    """A (240, 320, 3) frame whose ten vertical bars write ``index`` in binary (most significant bit left)."""
    height, width = SIZE
    frame = np.zeros((height, width, 3), dtype=np.uint8)
    step = width // BITS
    for bit in range(BITS):
        if index >> (BITS - 1 - bit) & 1:
            frame[:, bit * step : (bit + 1) * step] = 255
    return frame


def read_bars(frame: np.ndarray) -> int:
    width = frame.shape[1]
    step = width / BITS
    means = [frame[:, int((b + 0.25) * step) : int((b + 0.75) * step)].mean() for b in range(BITS)]
    return sum(1 << (BITS - 1 - b) for b, m in enumerate(means) if m > 127)


def write_source(path: Path, rate: Fraction, count: int) -> None:
    """``count`` frames of `bars` at exactly ``rate`` (29.97 is 30000/1001), H.264."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.height, stream.width = SIZE
        stream.pix_fmt, stream.options = "yuv420p", {"preset": "ultrafast", "crf": "18"}
        for index in range(count):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(bars(index), format="rgb24")))
        container.mux(stream.encode(None))


def decode_all(path: Path) -> list[tuple[float, int]]:
    """(time in seconds, index shown) of every frame of ``path``."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = container.decode(stream)
        return [(float(f.pts * stream.time_base), read_bars(f.to_ndarray(format="rgb24"))) for f in frames]


def measure(rate: Fraction, seconds: float, work: Path) -> list[dict]:
    count = int(round(seconds * rate))
    source = work / f"source_{float(rate):.3f}.mp4"
    write_source(source, rate, count)
    expected = math.ceil(Fraction(count) * 3 / rate)
    source_1fps = [read_bars(f.numpy()) for f in load_video(source, fps=1.0).frames]
    rows = []
    for mode in ("ffmpeg", "pyav"):
        target = work / f"{mode}_{float(rate):.3f}.mp4"
        compress_video(source, target, CompressOptions(mode=mode))
        shifts = [time - shown / float(rate) for time, shown in decode_all(target)]
        output_1fps = [read_bars(f.numpy()) for f in load_video(target, fps=1.0).frames]
        rows.append({
            "source fps": f"{float(rate):g}",
            "mode": mode,
            "output frames (ceil(3 N / r))": f"{len(shifts)} ({expected})",
            "max shift s": f"{max(shifts):.3f}",
            "min shift s": f"{min(shifts):.3f}",
            "mean shift s": f"{np.mean(shifts):.3f}",
            "1 fps frames unlike the source's": (
                f"{sum(a != b for a, b in zip(output_1fps, source_1fps)) + abs(len(output_1fps) - len(source_1fps))}"
                f" of {len(source_1fps)}"
            ),
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m etchat.bench.compression_shift", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each source clip")
    parser.add_argument("--work_dir", help="keep the clips here (default: a temporary folder)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.work_dir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [row for rate in RATES for row in measure(rate, args.seconds, work)]
    print(format_table(list(rows[0]), rows))


if __name__ == "__main__":
    main()
