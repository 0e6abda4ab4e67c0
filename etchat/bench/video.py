"""`video` scenario: frames/s of the video readers (decord, PyAV) on generated videos, 1 vs N decoding threads, and
on the same videos compressed the way E.T. Bench's inference reads them.

Each reader reads every video at 1 fps through `etchat.data.video.load_video`; the inference transform
(`clip_center_224`) is timed on its own since it costs about as much as decoding. The `-compressed` rows read the
videos after `python -m etchat.data.compress_videos` (3 fps, short side 224, cached next to the originals): generate
videos like the originals (e.g. `--video_fps 30 --video_size 480`) to see what compressing gains.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass

import torch

from etchat.bench.report import format_table
from etchat.bench.workload import SampleShape, ensure_videos
from etchat.cli import add_old_spelling
from etchat.data.transforms import build_transform
from etchat.data.video import load_video

logger = logging.getLogger(__name__)


@dataclass
class VideoConfig:
    name: str
    backend: str  # a load_video backend, or "transform"
    num_threads: int = 1
    compressed: bool = False  # read the compressed copies of the videos


def default_configs(num_threads: int) -> list[VideoConfig]:
    configs = []
    for backend in ("decord", "pyav"):
        configs.append(VideoConfig(f"{backend}-1", backend, 1))
        if num_threads > 1:
            configs.append(VideoConfig(f"{backend}-{num_threads}", backend, num_threads))
    configs.append(VideoConfig("transform", "transform", 0))
    configs += [VideoConfig(f"{backend}-1-compressed", backend, 1, True) for backend in ("decord", "pyav")]
    return configs


def ensure_compressed(videos: list[str], video_dir: str) -> list[str]:
    """The compressed copy of each video (E.T. Bench's 3 fps, short side 224), written when missing."""
    from etchat.data.compress_videos import CompressOptions, compress_video

    folder = os.path.join(video_dir, "compressed")
    targets = [os.path.join(folder, os.path.basename(v)) for v in videos]
    for source, target in zip(videos, targets):
        if not os.path.exists(target):
            logger.info("video: compressing %s", source)
            compress_video(source, target, CompressOptions())
    return targets


def run_config(config: dict) -> dict:
    videos = config["videos"]
    if config["backend"] == "transform":
        transform = build_transform("clip_center_224", inference=True)
        clips = [load_video(v, fps=1.0, backend="auto").frames for v in videos]
        start = time.perf_counter()
        frames = sum(transform(c).size(0) for c in clips)
        return {
            "wall": time.perf_counter() - start,
            "frames": frames,
            "decoded": None,
            "threads": torch.get_num_threads(),
        }
    load_video(videos[0], backend=config["backend"], num_threads=config["num_threads"])  # warm-up: codec init
    start = time.perf_counter()
    frames = decoded = 0
    for path in videos:
        clip = load_video(path, fps=1.0, num_threads=config["num_threads"], backend=config["backend"])
        frames += clip.frames.size(0)
        decoded += clip.indices[-1] + 1  # frames a sequential decoder goes through
    return {"wall": time.perf_counter() - start, "frames": frames, "decoded": decoded, "threads": config["num_threads"]}


def add_arguments(parser) -> None:
    parser.add_argument("--videos", type=int, default=4, help="number of videos to read")
    parser.add_argument("--seconds", type=int, default=150, help="length of the first video (the next are 1 s longer)")
    parser.add_argument(
        "--video_decode_threads",
        type=int,
        help="the N of 1 vs N decoder threads per video (default: the CPU count)",
    )
    add_old_spelling(parser, "--threads", "video_decode_threads", type=int)


def run(args, run_one) -> str:
    size = args.video_size
    # Lengths --seconds, --seconds + 1, ... so the videos differ (they are cached by length).
    shapes = [SampleShape(i, args.seconds + i, 0, 0, []) for i in range(args.videos)]
    ensure_videos(shapes, args.video_dir, args.video_fps, size)
    threads = args.video_decode_threads or os.cpu_count() or 1
    configs = default_configs(threads)
    if args.configs:
        wanted = args.configs.split(",")
        configs = [c for c in configs if c.name in wanted]
    originals = [s.video for s in shapes]
    compressed = ensure_compressed(originals, args.video_dir) if any(c.compressed for c in configs) else []
    rows, failures, walls = [], [], {}
    for config in configs:
        logger.info("video: running %s", config.name)
        videos = compressed if config.compressed else originals
        try:
            result = run_one("etchat.bench.video:run_config", dict(asdict(config), videos=videos))
        except Exception as e:
            logger.warning("video config %s failed: %s", config.name, e)
            failures.append(f"{config.name}: {e}")
            continue
        walls[(config.backend, config.num_threads, config.compressed)] = result["wall"]
        original_wall = walls.get((config.backend, config.num_threads, False))
        rows.append(
            {
                "reader": config.name,
                "threads": result["threads"],
                "frames (1 fps)": result["frames"],
                "frames/s (1 fps)": result["frames"] / result["wall"],
                "decoded frames/s": result["decoded"] / result["wall"] if result["decoded"] else None,
                "wall s": result["wall"],
                "vs original": original_wall / result["wall"] if config.compressed and original_wall else None,
            }
        )
    columns = ["reader", "threads", "frames (1 fps)", "frames/s (1 fps)", "decoded frames/s", "wall s", "vs original"]
    lines = [
        f"Workload: {len(shapes)} H.264 videos of {min(s.num_frames for s in shapes)}-"
        f"{max(s.num_frames for s in shapes)} s at {args.video_fps:g} fps, short side {size} px, read at 1 fps. "
        "'transform' is clip_center_224 (resize, crop, normalise) on the decoded frames, in torch's threads; "
        "'-compressed' rows read the videos after compress_videos (3 fps, short side 224), and 'vs original' is "
        "the original's wall time over theirs with the same reader.",
        "",
        format_table(columns, rows),
    ]
    lines += [f"- FAILED {f}" for f in failures]
    return "\n".join(lines)
