"""`memory` scenario: peak memory of turning one clip into model input, for a 224 px and a 4K version of the clip.

What chat, the demo and inference do with a video: decode it at 1 fps and transform the frames (`clip_center_224`).
Each configuration runs in a fresh process and reports its peak resident memory above the process's baseline (the
interpreter and libraries), and what the decoded clip keeps holding afterwards (the demo caches it for follow-up
questions). `stored` decodes all kept frames at their stored size and resizes them in the transform; `scaled` is what
the readers do with the model's input size (`load_video(short_side=...)`): each frame is decoded at full size and
resized at once, as the published transform resizes it, so only one full-size frame is held at a time.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass

import numpy as np
import torch

from etchat.bench.measure import current_rss_mib, peak_rss_mib, reset_peak_rss
from etchat.bench.report import format_table
from etchat.bench.workload import encode_h264
from etchat.data.transforms import build_transform
from etchat.data.video import load_video

logger = logging.getLogger(__name__)

# (height, width) of the two versions of the clip: the size E.T. Bench's compressed videos have, and 4K UHD.
SOURCES = {"224p": (224, 398), "4k": (2160, 3840)}
FRAME_SIZE = 224


@dataclass
class MemoryConfig:
    name: str
    source: str  # a key of SOURCES
    scaled: bool  # scale frames while decoding


def default_configs() -> list[MemoryConfig]:
    return [
        MemoryConfig(f"{source}-{mode}", source, mode == "scaled")
        for source in SOURCES
        for mode in ("stored", "scaled")
    ]


def clip_path(video_dir: str, source: str, seconds: int, fps: float) -> str:
    return os.path.join(video_dir, f"memory_{source}_{seconds}s_{fps:g}fps.mp4")


def write_clip(path: str, size: tuple[int, int], seconds: int, fps: float) -> None:
    """Slowly moving colour gradients (few bits per frame, like the screen recordings people chat about)."""
    height, width = size
    rows, cols = np.mgrid[0:height, 0:width]

    def frames():
        for i in range(int(round(seconds * fps))):
            channels = [(cols * 256 // width + i) % 256, (rows * 256 // height + 2 * i) % 256, (i * 3) % 256]
            yield np.stack(np.broadcast_arrays(*channels), -1).astype(np.uint8)

    encode_h264(path, frames(), fps, size, preset="ultrafast", crf=30)


def run_config(config: dict) -> dict:
    transform = build_transform(f"clip_center_{FRAME_SIZE}", inference=True)
    baseline = current_rss_mib()
    reset_peak_rss()
    clip = load_video(config["path"], fps=1.0, short_side=FRAME_SIZE if config["scaled"] else None)
    frames = transform(clip.frames)
    return {
        "peak_mib": peak_rss_mib() - baseline,
        "held_mib": clip.frames.numel() * clip.frames.element_size() / 2**20,
        "frames": frames.size(0),
        # uint8 (T, H, W, C) as stored, or float (T, C, h, w) resized while decoding
        "decoded": "x".join(
            map(str, clip.frames.shape[1:3] if clip.frames.dtype == torch.uint8 else clip.frames.shape[2:])
        ),
    }


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=int, default=60, help="length of the clip")
    parser.add_argument("--clip_fps", type=float, default=2.0, help="frame rate of the generated clip")


def run(args, run_one) -> str:
    os.makedirs(args.video_dir, exist_ok=True)
    paths = {}
    for source, size in SOURCES.items():
        paths[source] = clip_path(args.video_dir, source, args.seconds, args.clip_fps)
        if not os.path.exists(paths[source]):
            logger.info("writing %s", paths[source])
            write_clip(paths[source], size, args.seconds, args.clip_fps)
    configs = default_configs()
    if args.configs:
        configs = [c for c in configs if c.name in args.configs.split(",")]
    rows, failures = [], []
    for config in configs:
        logger.info("memory: running %s", config.name)
        try:
            result = run_one("etchat.bench.memory:run_config", dict(asdict(config), path=paths[config.source]))
        except Exception as e:
            failures.append(f"{config.name}: {e}")
            continue
        rows.append(
            {
                "clip": config.source,
                "decoding": "each frame resized to 224 as decoded" if config.scaled else "stored size",
                "decoded frames": f"{result['frames']} x {result['decoded']}",
                "peak MiB": result["peak_mib"],
                "held by the clip MiB": result["held_mib"],
            }
        )
    sizes = ", ".join(
        f"{source} ({h}x{w}, {os.path.getsize(paths[source]) / 2**20:.1f} MB)" for source, (h, w) in SOURCES.items()
    )
    lines = [
        f"Workload: one {args.seconds} s clip at {args.clip_fps:g} fps in two versions, {sizes}; read at 1 fps "
        f"and transformed with clip_center_{FRAME_SIZE}. Peak = resident memory above the process's baseline.",
        "",
        format_table(["clip", "decoding", "decoded frames", "peak MiB", "held by the clip MiB"], rows),
    ]
    return "\n".join(lines + [f"- FAILED {f}" for f in failures])
