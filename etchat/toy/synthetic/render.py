"""Drawing the synthetic scenes and encoding them as mp4 (PyAV) or PNG files."""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

from etchat.toy.synthetic.scenes import COLOURS, ImageSpec, VideoSpec


def shape_mask(shape: str, diameter: int) -> np.ndarray:
    """Boolean (diameter, diameter) mask of a shape filling its bounding box."""
    c = (diameter - 1) / 2
    y, x = np.mgrid[0:diameter, 0:diameter]
    if shape == "circle":
        return (x - c) ** 2 + (y - c) ** 2 <= (diameter / 2) ** 2
    if shape == "square":
        inset = round(diameter * 0.08)  # a full box looks bigger than the other shapes
        mask = np.zeros((diameter, diameter), dtype=bool)
        mask[inset : diameter - inset, inset : diameter - inset] = True
        return mask
    if shape == "triangle":  # apex up
        return np.abs(x - c) <= (y + 0.5) / diameter * (diameter / 2)
    if shape == "diamond":
        return np.abs(x - c) + np.abs(y - c) <= diameter / 2
    raise ValueError(f"unknown shape: {shape!r}")


def _paste(frame: np.ndarray, mask: np.ndarray, xy: tuple[int, int], rgb) -> None:
    x, y = xy
    d = mask.shape[0]
    frame[y : y + d, x : x + d][mask] = rgb


def render_video_frame(spec: VideoSpec, t: float, masks: dict | None = None) -> np.ndarray:
    """The RGB frame of `spec` at time `t` seconds; distractors are drawn under the named shapes."""
    masks = {} if masks is None else masks
    frame = np.full((spec.size, spec.size, 3), spec.background, dtype=np.uint8)
    for item in spec.distractors:
        mask = masks.setdefault((item.shape, item.diameter), shape_mask(item.shape, item.diameter))
        _paste(frame, mask, item.position(t, spec.size), item.gray)
    for event in spec.events:
        if event.is_visible(t):
            xy, size = event.box(t)
            mask = masks.setdefault((event.shape, size), shape_mask(event.shape, size))
            _paste(frame, mask, xy, COLOURS[event.colour])
    return frame


def render_image(spec: ImageSpec) -> np.ndarray:
    frame = np.full((spec.size, spec.size, 3), spec.background, dtype=np.uint8)
    for item in spec.distractors:
        _paste(frame, shape_mask(item.shape, item.diameter), item.position(0.0, spec.size), item.gray)
    for obj in spec.objects:
        _paste(frame, shape_mask(obj.shape, obj.diameter), obj.xy, COLOURS[obj.colour])
    return frame


def pick_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def encode_video(spec: VideoSpec, path: str, fps: int, codec: str) -> None:
    """Write `spec` as an mp4 of `duration * fps` frames, a keyframe every second; atomic (temp file + rename)."""
    tmp_path = path + ".part"
    masks = {}
    with av.open(tmp_path, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = spec.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1  # one process per core already; also keeps output deterministic
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18", "g": str(fps)}
        else:
            stream.options = {"g": str(fps), "qscale": "3"}
        for k in range(spec.duration * fps):
            frame = av.VideoFrame.from_ndarray(render_video_frame(spec, k / fps, masks), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp_path, path)


def encode_video_job(job: tuple[VideoSpec, str, int, str]) -> int:
    spec, path, fps, codec = job
    encode_video(spec, path, fps, codec)
    return os.path.getsize(path)


def image_job(job: tuple[ImageSpec, str]) -> int:
    spec, path = job
    Image.fromarray(render_image(spec)).save(path + ".part", format="PNG")
    os.replace(path + ".part", path)
    return os.path.getsize(path)


def run_jobs(fn, jobs: list, workers: int, desc: str) -> list[int]:
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in tqdm(jobs, desc=desc)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fn, jobs, chunksize=4), total=len(jobs), desc=desc))
