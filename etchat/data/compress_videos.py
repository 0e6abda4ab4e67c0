"""Compress a folder of videos the way E.T. Bench's published script does (docs/design.md §14).

    python -m etchat.data.compress_videos [--src_dir videos] [--tgt_dir videos_compressed] [--fps 3] [--size 224]
                                          [--workers N] [--mode ffmpeg|pyav] [--keep_aspect]
    python -m etchat.data.compress_videos SRC DST [...]

Every video under the source folder (``.mp4``, ``.mkv``, ``.webm``, ``.avi``, ``.mov``, ``.m4v``) becomes
``<target>/<same relative path>.mp4``: video only (audio dropped), ``--fps`` frames per second, the short side
``--size`` pixels (the long side scaled by the aspect ratio and truncated to an even number, as the published ffmpeg
filter does), H.264 at x264's defaults (CRF 23, preset medium), yuv420p. The display rotation of phone videos is
applied, as ffmpeg does.

``--mode ffmpeg`` (the default) runs the published ffmpeg command itself (``-filter:v scale=... -map 0:v -r FPS``),
with the ffmpeg binary of the ``imageio-ffmpeg`` package (or ``--ffmpeg PATH``): the frames, frame count and
timing of the published compressed videos, including the lag of ffmpeg's ``-r`` (up to ~0.4 s behind the source, see
docs/benchmarks.md). ``--mode pyav`` encodes on PyAV without that lag: frame ``n`` of the output shows the input
frame nearest to ``n / fps`` seconds, and an input of ``N`` frames at average rate ``r`` gives ``ceil(N * fps / r)``
output frames, so reading the output at 1 fps gives the frames and times of reading the input at 1 fps.

A rerun skips finished outputs; each output is written under a temporary name and renamed when complete, so a
killed run never leaves a truncated video that looks finished. One run at a time writes into a target folder (a lock
file; a second run refuses in one line), and the worker processes and their ffmpeg end with the run, however it
ends. A video that cannot be read or encoded is logged, listed at the end and makes the exit status non-zero; the
others are still compressed. Ctrl-C stops the run with one line; a rerun goes on where it stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mkv", ".webm", ".avi", ".mov", ".m4v")
TMP_SUFFIX = ".part"
LOCK_NAME = ".compress_videos.lock"
MODES = ("ffmpeg", "pyav")
EXIT_INTERRUPTED = 130
# The encoder settings of the published command (ffmpeg's libx264 defaults).
X264_OPTIONS = {"crf": "23", "preset": "medium"}


@dataclass(frozen=True)
class CompressOptions:
    fps: Fraction = Fraction(3)
    size: int = 224
    keep_aspect: bool = False
    mode: str = "ffmpeg"  # "ffmpeg": the published command; "pyav": nearest frames, no lag
    ffmpeg: str | None = None  # the ffmpeg binary (default: imageio-ffmpeg's)


class AlreadyRunningError(RuntimeError):
    """Another run is writing into the same target folder."""


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
    if options.mode == "ffmpeg":
        _run_ffmpeg(source, target, options)
        return
    if options.mode != "pyav":
        raise ValueError(f"unknown mode {options.mode!r}, expected one of {MODES}")
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


def ffmpeg_filter(size: int, keep_aspect: bool = False) -> str:
    """The published scale filter (`output_size` computes what it gives); ``keep_aspect`` fixes portrait frames."""
    portrait = "trunc(ow/a/2)*2" if keep_aspect else "trunc(ow*a/2)*2"
    return f"scale='if(gt(a,1),trunc(oh*a/2)*2,{size})':'if(gt(a,1),{size},{portrait})'"


def ffmpeg_binary(path: str | None = None) -> str:
    """``path``, else the ffmpeg binary shipped in the imageio-ffmpeg package (nothing is downloaded)."""
    if path:
        return path
    try:
        import imageio_ffmpeg
    except ImportError as error:
        raise RuntimeError("--mode ffmpeg needs the imageio-ffmpeg package (or --ffmpeg PATH)") from error
    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_command(source: str, target: str, options: CompressOptions) -> list[str]:
    """The published command (``ffmpeg -y -i SRC -filter:v SCALE -map 0:v -r FPS DST``), writing an mp4 to
    ``target`` whatever its name, quietly, without reading the terminal."""
    fps = (
        str(options.fps.numerator)
        if options.fps.denominator == 1
        else f"{options.fps.numerator}/{options.fps.denominator}"
    )
    command = [ffmpeg_binary(options.ffmpeg), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", source]
    command += ["-filter:v", ffmpeg_filter(options.size, options.keep_aspect), "-map", "0:v", "-r", fps]
    return command + ["-f", "mp4", target]


def _run_ffmpeg(source: str, target: str, options: CompressOptions) -> None:
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    tmp = target + TMP_SUFFIX
    try:
        result = subprocess.run(
            ffmpeg_command(source, tmp, options),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        if result.returncode != 0:
            lines = [line for line in result.stderr.splitlines() if line.strip()]
            raise ValueError(f"ffmpeg exited with status {result.returncode}: {lines[-1] if lines else 'no message'}")
        if not os.path.isfile(tmp) or os.path.getsize(tmp) == 0:
            raise ValueError("ffmpeg wrote no video")
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
    with target_lock(target_root):
        return _compress_pairs(pairs, source_root, target_root, options, workers)


def _compress_pairs(pairs, source_root, target_root, options: CompressOptions, workers: int | None) -> list[Outcome]:
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
    # spawn: the workers must not inherit the parent's decoder or thread state. Leaving the block (the end, an error,
    # Ctrl-C) terminates them.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=_init_worker, initargs=(os.getpid(),)) as pool:
        yield from pool.imap_unordered(_compress_one, jobs)


def _die_with_parent() -> None:
    """Linux: have the kernel kill this process when the process (thread) that started it ends, even by SIGKILL."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG


def _init_worker(parent_pid: int) -> None:
    """A worker ignores Ctrl-C (the parent stops it) and never outlives the parent: it would go on writing into the
    target folder while a rerun works there."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform == "linux":
        _die_with_parent()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()


def _watch_parent(parent_pid: int, interval: float = 0.5) -> None:
    """Portable fallback of `_die_with_parent`: exit once the parent is gone (this process then has another one)."""
    import time

    while os.getppid() == parent_pid:
        time.sleep(interval)
    os._exit(1)


def _remove_partial_files(target_root: Path) -> None:
    for leftover in target_root.rglob("*" + TMP_SUFFIX):
        leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def target_lock(target_root: str | os.PathLike):
    """Hold the target folder for this run: a second run refuses (AlreadyRunningError) while this one lives. The lock
    is the kernel's (flock), so a killed run leaves none behind; then partial files of killed runs are removed."""
    target_root = Path(target_root)
    target_root.mkdir(parents=True, exist_ok=True)
    path = target_root / LOCK_NAME
    handle = open(path, "a+")
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no flock (Windows): no protection against a second run
            pass
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            raise AlreadyRunningError(
                f"another compress_videos run (pid {holder}) is writing into {target_root}; wait for it to end "
                "or stop it, then run again"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _remove_partial_files(target_root)  # of a killed run
        try:
            yield
        finally:
            # Still held, and the workers are gone: whatever is partial is this run's (stopped by Ctrl-C or an error).
            _remove_partial_files(target_root)
            path.unlink(missing_ok=True)
    finally:
        handle.close()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.data.compress_videos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("src", nargs="?", help="folder of the original videos (same as --src_dir)")
    parser.add_argument("dst", nargs="?", help="output folder (same as --tgt_dir)")
    parser.add_argument("--src_dir", help="folder of the original videos (default: videos)")
    parser.add_argument("--tgt_dir", help="output folder (default: videos_compressed)")
    parser.add_argument("--fps", type=Fraction, default=Fraction(3), help="output frame rate (default 3)")
    parser.add_argument("--size", type=int, default=224, help="short side of the output in pixels (default 224)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default="ffmpeg",
        help="ffmpeg: the published ffmpeg command, frame for frame (default); pyav: the nearest source frame at each "
        "output time, without ffmpeg's lag of up to ~0.4 s",
    )
    parser.add_argument("--ffmpeg", help="ffmpeg binary for --mode ffmpeg (default: the one of imageio-ffmpeg)")
    parser.add_argument(
        "--keep_aspect",
        action="store_true",
        help="keep the aspect ratio of portrait videos (the published filter squashes them to height 224 * w / h)",
    )
    return parser


def _folders(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, str]:
    """The source and target folders from the positional form or the published flags (not both, unless equal)."""
    folders = []
    for positional, flag, name, default in ((args.src, args.src_dir, "--src_dir", "videos"),
                                            (args.dst, args.tgt_dir, "--tgt_dir", "videos_compressed")):  # fmt: skip
        if positional is not None and flag is not None and positional != flag:
            parser.error(f"the folder is given twice: {positional} and {name} {flag}")
        folders.append(positional or flag or default)
    return folders[0], folders[1]


def main(argv: list[str] | None = None) -> int:
    from etchat.cli import setup_logging  # imports torch: kept out of the worker processes

    parser = build_parser()
    args = parser.parse_args(argv)
    src, dst = _folders(parser, args)
    setup_logging()
    if args.fps <= 0 or args.size < 2:
        raise SystemExit(f"--fps must be positive and --size at least 2, got {args.fps} and {args.size}")
    options = CompressOptions(
        fps=args.fps, size=args.size, keep_aspect=args.keep_aspect, mode=args.mode, ffmpeg=args.ffmpeg
    )
    try:
        if options.mode == "ffmpeg":
            options = CompressOptions(**{**options.__dict__, "ffmpeg": ffmpeg_binary(options.ffmpeg)})
        outcomes = compress_tree(src, dst, options, args.workers)
    except KeyboardInterrupt:
        print("compress_videos: interrupted; finished videos are kept, run the same command again to go on",
              file=sys.stderr)  # fmt: skip
        return EXIT_INTERRUPTED
    except (AlreadyRunningError, FileNotFoundError, ValueError, RuntimeError) as error:
        print(f"compress_videos: {error}", file=sys.stderr)
        return 2
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
