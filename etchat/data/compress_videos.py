"""Compress a folder of videos the way E.T. Bench's published script does, on PyAV (docs/design.md §14).

    python -m etchat.data.compress_videos SRC DST [--fps 3] [--size 224] [--workers N] [--keep_aspect]

Every video under SRC (``.mp4``, ``.mkv``, ``.webm``, ``.avi``, ``.mov``, ``.m4v``) becomes ``DST/<same relative
path>.mp4``: video only (audio dropped), ``--fps`` frames per second, the short side ``--size`` pixels (the long side
scaled by the aspect ratio and truncated to an even number, as the published ffmpeg filter does), H.264 at x264's
defaults (CRF 23, preset medium), yuv420p. The display rotation of phone videos is applied, as ffmpeg does.

Frame ``n`` of the output shows the input frame nearest to ``n / fps`` seconds; an input of ``N`` frames at average
rate ``r`` gives ``ceil(N * fps / r)`` output frames, so reading the output at 1 fps gives the frames, times and
(within one output frame) the duration of reading the input at 1 fps (docs/design.md §1).

A rerun skips finished outputs; each output is written under a temporary name and renamed when complete, so a
killed run never leaves a truncated video that looks finished. A video that cannot be read or encoded is logged,
listed at the end and makes the exit status non-zero; the others are still compressed.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
TMP_SUFFIX = ".part"
# The encoder settings of the published command (ffmpeg's libx264 defaults).
X264_OPTIONS = {"crf": "23", "preset": "medium"}


@dataclass(frozen=True)
class CompressOptions:
    fps: Fraction = Fraction(3)
    size: int = 224
    keep_aspect: bool = False


@dataclass(frozen=True)
class Outcome:
    source: str
    status: str  # "done", "skipped" (already there) or "failed"
    message: str = ""


def output_size(width: int, height: int, size: int, keep_aspect: bool = False) -> tuple[int, int]:
    """Output (width, height) as the published ffmpeg filter gives them:
    ``scale='if(gt(a,1),trunc(oh*a/2)*2,S)':'if(gt(a,1),S,trunc(ow*a/2)*2)'``.

    Landscape frames get height ``S``; the others width ``S`` and height ``trunc(S * a / 2) * 2`` with ``a = w / h``,
    which squashes portrait frames (a 9:16 frame becomes 224 x 126). ``keep_aspect`` gives portrait frames height
    ``trunc(S / a / 2) * 2`` instead.
    """
    aspect = Fraction(width, height)
    if aspect > 1:
        return _even(size * aspect), size
    return size, _even(size / aspect if keep_aspect else size * aspect)


def _even(x: Fraction) -> int:
    return max(2, math.floor(x / 2) * 2)


def output_frame_count(num_frames: int, avg_rate: Fraction, fps: Fraction) -> int:
    """``ceil(N * fps / r)``: the output lasts at least as long as the input and less than one output frame more."""
    return math.ceil(Fraction(num_frames) * fps / avg_rate)


def pick_frames(times: list[Fraction], fps: Fraction, count: int) -> list[int]:
    """For output frames ``0 .. count - 1``, the index of the input frame nearest to ``n / fps`` (ties: the earlier).

    ``times`` are the input frames' presentation times in increasing order.
    """
    picks, current = [], 0
    for n in range(count):
        tick = n / fps
        while current + 1 < len(times) and times[current + 1] - tick < tick - times[current]:
            current += 1
        picks.append(current)
    return picks


def _stream_rate(stream) -> Fraction:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise ValueError("the video stream has no frame rate")
    return Fraction(rate)


def _frame_times(container, stream, avg_rate: Fraction) -> list[Fraction]:
    """Presentation time of every frame, from the demuxed packets (no decoding): relative to the first frame, or
    ``i / r`` when the packets carry no usable timestamps."""
    stamps = [p.pts for p in container.demux(stream) if p.size > 0]  # one per frame, as the readers count them
    if not stamps:
        raise ValueError("the video stream has no frames")
    if None in stamps or len(set(stamps)) != len(stamps):
        return [i / avg_rate for i in range(len(stamps))]
    stamps.sort()
    base = Fraction(stream.time_base)
    return [(pts - stamps[0]) * base for pts in stamps]


def _rotate(frame, degrees: int):
    """The frame turned by its display rotation (counter-clockwise degrees), as ffmpeg's autorotate shows it."""
    import av

    turns = round(degrees / 90) % 4
    if turns == 0:
        return frame
    pixels = np.rot90(frame.to_ndarray(format="rgb24"), k=turns)
    return av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")


def _decoded_frames(path: str) -> Iterator:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        yield from container.decode(stream)


def compress_video(source: str | os.PathLike, target: str | os.PathLike, options: CompressOptions) -> None:
    """Write the compressed ``source`` to ``target`` (through ``target.part``); raise on an unreadable input."""
    import av

    source, target = os.fspath(source), os.fspath(target)
    with av.open(source) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        avg_rate = _stream_rate(stream)
        times = _frame_times(container, stream, avg_rate)
    count = output_frame_count(len(times), avg_rate, options.fps)
    wanted: dict[int, list[int]] = {}
    for n, index in enumerate(pick_frames(times, options.fps, count)):
        wanted.setdefault(index, []).append(n)

    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tmp = target + TMP_SUFFIX
    try:
        written = _encode(source, tmp, wanted, options)
        if written != count:
            raise ValueError(f"decoded frames for {written} of {count} output frames (the stream ends early)")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _encode(source: str, tmp: str, wanted: dict[int, list[int]], options: CompressOptions) -> int:
    """Encode the picked frames of ``source`` into ``tmp``; returns the number of output frames written."""
    import av

    written = 0
    with av.open(tmp, "w", format="mp4") as output:
        encoder = None
        for index, frame in enumerate(_decoded_frames(source)):
            if index not in wanted:
                continue
            frame = _rotate(frame, frame.rotation)
            width, height = output_size(frame.width, frame.height, options.size, options.keep_aspect)
            if encoder is None:
                encoder = output.add_stream("libx264", rate=options.fps, options=dict(X264_OPTIONS))
                encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
            scaled = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BICUBIC")
            for n in wanted[index]:
                scaled.pts = n
                scaled.time_base = 1 / options.fps
                output.mux(encoder.encode(scaled))
                written += 1
        if encoder is not None:
            output.mux(encoder.encode(None))
    return written


def find_videos(source_root: str | os.PathLike, target_root: str | os.PathLike) -> list[tuple[Path, Path]]:
    """(input, output) pairs of every video under ``source_root``, in path order; outputs mirror the folders."""
    source_root, target_root = Path(source_root), Path(target_root)
    if not source_root.is_dir():
        raise FileNotFoundError(f"{source_root} is not a folder")
    if source_root.resolve() == target_root.resolve():
        raise ValueError(f"the output folder must differ from the input folder {source_root}")
    pairs = []
    for path in sorted(source_root.rglob("*")):
        if path.suffix.lower() in VIDEO_EXTENSIONS and path.is_file() and not path.name.startswith("."):
            pairs.append((path, (target_root / path.relative_to(source_root)).with_suffix(".mp4")))
    return pairs


def _compress_one(job: tuple[Path, Path, CompressOptions]) -> Outcome:
    source, target, options = job
    if target.exists():
        return Outcome(str(source), "skipped")
    try:
        compress_video(source, target, options)
    except Exception as error:  # noqa: BLE001 - one broken video must not stop the others
        return Outcome(str(source), "failed", f"{type(error).__name__}: {error}")
    return Outcome(str(source), "done")


def compress_tree(
    source_root: str | os.PathLike,
    target_root: str | os.PathLike,
    options: CompressOptions = CompressOptions(),
    workers: int | None = None,
) -> list[Outcome]:
    """Compress every video under ``source_root`` into ``target_root`` with ``workers`` processes (default: one
    per core; 0 or 1: in this process). Returns one outcome per video, failures included."""
    pairs = find_videos(source_root, target_root)
    clashes = _clashing_outputs(pairs)
    jobs = [(source, target, options) for source, target in pairs if target not in clashes]
    outcomes = [
        Outcome(str(source), "failed", f"another input also becomes {target}") for source, target in pairs
        if target in clashes
    ]  # fmt: skip
    workers = os.cpu_count() if workers is None else workers
    logger.info("%d videos under %s -> %s (%d workers)", len(pairs), source_root, target_root, max(workers, 1))
    with tqdm(total=len(jobs), unit="video", desc="compressing", dynamic_ncols=True) as bar:
        for outcome in _run(jobs, workers):
            if outcome.status == "failed":
                logger.warning("Cannot compress %s: %s", outcome.source, outcome.message)
            outcomes.append(outcome)
            bar.update(1)
    return outcomes


def _clashing_outputs(pairs: list[tuple[Path, Path]]) -> set[Path]:
    seen, clashes = set(), set()
    for _, target in pairs:
        (clashes if target in seen else seen).add(target)
    return clashes


def _run(jobs: list, workers: int) -> Iterator[Outcome]:
    if workers <= 1 or len(jobs) <= 1:
        yield from map(_compress_one, jobs)
        return
    # spawn: the workers must not inherit the parent's decoder or thread state.
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap_unordered(_compress_one, jobs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.data.compress_videos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", help="folder of the original videos (e.g. data/etbench/videos)")
    parser.add_argument("dst", help="output folder (e.g. data/etbench/videos_compressed)")
    parser.add_argument("--fps", type=Fraction, default=Fraction(3), help="output frame rate (default 3)")
    parser.add_argument("--size", type=int, default=224, help="short side of the output in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    parser.add_argument(
        "--keep_aspect",
        action="store_true",
        help="keep the aspect ratio of portrait videos (the published filter squashes them to height 224 * w / h)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from etchat.cli import setup_logging  # imports torch: kept out of the worker processes

    args = build_parser().parse_args(argv)
    setup_logging()
    if args.fps <= 0 or args.size < 2:
        raise SystemExit(f"--fps must be positive and --size at least 2, got {args.fps} and {args.size}")
    options = CompressOptions(fps=args.fps, size=args.size, keep_aspect=args.keep_aspect)
    outcomes = compress_tree(args.src, args.dst, options, args.workers)
    counts = {status: sum(o.status == status for o in outcomes) for status in ("done", "skipped", "failed")}
    logger.info("%d compressed, %d already there, %d failed", counts["done"], counts["skipped"], counts["failed"])
    failed = sorted((o for o in outcomes if o.status == "failed"), key=lambda o: o.source)
    for outcome in failed:
        logger.error("FAILED %s: %s", outcome.source, outcome.message)
    if failed:
        print(f"{len(failed)} of {len(outcomes)} videos could not be compressed (listed above)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
