"""`video` scenario: frames/s of the video readers (decord, PyAV) on generated videos, 1 vs N decoding threads.

Each reader reads every video at 1 fps through `etchat.data.video.load_video`; the inference transform
(`clip_center_224`) is timed on its own since it costs about as much as decoding.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass

import torch

from etchat.bench.report import format_table
from etchat.bench.workload import SampleShape, ensure_videos
from etchat.data.transforms import build_transform
from etchat.data.video import load_video

logger = logging.getLogger(__name__)


@dataclass
class VideoConfig:
    name: str
    backend: str  # a load_video backend, or "transform"
    num_threads: int = 1


def default_configs(num_threads: int) -> list[VideoConfig]:
    configs = []
    for backend in ("decord", "pyav"):
        configs.append(VideoConfig(f"{backend}-1", backend, 1))
        if num_threads > 1:
            configs.append(VideoConfig(f"{backend}-{num_threads}", backend, num_threads))
    configs.append(VideoConfig("transform", "transform", 0))
    return configs


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
    parser.add_argument("--threads", type=int, help="the N of 1 vs N decoding threads (default: the CPU count)")


def run(args, run_one) -> str:
    size = args.video_size
    # Lengths --seconds, --seconds + 1, ... so the videos differ (they are cached by length).
    shapes = [SampleShape(i, args.seconds + i, 0, 0, []) for i in range(args.videos)]
    ensure_videos(shapes, args.video_dir, args.video_fps, size)
    threads = args.threads or os.cpu_count() or 1
    configs = default_configs(threads)
    if args.configs:
        wanted = args.configs.split(",")
        configs = [c for c in configs if c.name in wanted]
    rows, failures = [], []
    for config in configs:
        logger.info("video: running %s", config.name)
        try:
            result = run_one("etchat.bench.video:run_config", dict(asdict(config), videos=[s.video for s in shapes]))
        except Exception as e:
            logger.warning("video config %s failed: %s", config.name, e)
            failures.append(f"{config.name}: {e}")
            continue
        rows.append(
            {
                "reader": config.name,
                "threads": result["threads"],
                "frames (1 fps)": result["frames"],
                "frames/s (1 fps)": result["frames"] / result["wall"],
                "decoded frames/s": result["decoded"] / result["wall"] if result["decoded"] else None,
                "wall s": result["wall"],
            }
        )
    columns = ["reader", "threads", "frames (1 fps)", "frames/s (1 fps)", "decoded frames/s", "wall s"]
    lines = [
        f"Workload: {len(shapes)} H.264 videos of {min(s.num_frames for s in shapes)}-"
        f"{max(s.num_frames for s in shapes)} s at {args.video_fps:g} fps, short side {size} px, read at 1 fps. "
        "'transform' is clip_center_224 (resize, crop, normalise) on the decoded frames, in torch's threads.",
        "",
        format_table(columns, rows),
    ]
    lines += [f"- FAILED {f}" for f in failures]
    return "\n".join(lines)
