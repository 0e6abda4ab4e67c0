"""Test helper: a small E.T. Bench on disk, every (task, source) group once, with short videos.

The samples are those of `etchat.toy.predictions` (the real field layout, `<vid>` questions), their times scaled into
videos of a few seconds. Both question forms are written: ``annotations/vid`` (times as `<vid>` tokens, E.T. Chat's)
and ``annotations/txt`` (each `<vid>` written as its time, ``12.5s``, for models that read text).
"""

from __future__ import annotations

import json
from pathlib import Path

from etchat.constants import MATCH_TOKEN
from etchat.eval.etbench.scorers import OPTION_LETTERS
from etchat.toy.predictions import make_predictions
from tests.video_utils import write_test_video

VIDEO_SECONDS = {"v0.mp4": 4, "v1.mp4": 6, "v2.mp4": 5}
TIME_FIELDS = ("src", "tgt")


def _scaled(value, factor: float):
    if isinstance(value, list):
        return [_scaled(item, factor) for item in value]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return round(value * factor, 1)
    return value


def text_question(sample: dict) -> str:
    """The question with each `<vid>` written as its time."""
    pieces = sample["q"].split(MATCH_TOKEN)
    times = [f"{t}s" for t in sample.get("src") or []]
    return pieces[0] + "".join(time + piece for time, piece in zip(times, pieces[1:]))


def small_etbench(tasks: tuple[str, ...] | None = None) -> list[dict]:
    """One sample per (task, source) group (of ``tasks``), in `<vid>` form, times inside its short video."""
    names = list(VIDEO_SECONDS)
    samples = []
    for position, sample in enumerate(s for s in make_predictions(1e-4, seed=0) if not tasks or s["task"] in tasks):
        video = names[position % len(names)]
        factor = (VIDEO_SECONDS[video] - 0.5) / sample["duration"]
        sample = {k: v for k, v in sample.items() if k != "a"}
        for name in TIME_FIELDS:
            if name in sample:
                sample[name] = _scaled(sample[name], factor)
        if sample["task"] == "eca":  # its options are time spans
            sample["o"] = _scaled(sample["o"], factor)
        samples.append({**sample, "video": video, "duration": float(VIDEO_SECONDS[video])})
    return samples


def write_etbench(root: Path, tasks: tuple[str, ...] | None = None) -> tuple[Path, Path, list[dict]]:
    """``root/annotations/{vid,txt}/etbench.json`` and ``root/videos``; returns (annotations, videos, samples)."""
    videos = root / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for name, seconds in VIDEO_SECONDS.items():
        write_test_video(videos / name, num_frames=2 * seconds, fps=2, size=(32, 32))
    samples = small_etbench(tasks)
    annotations = root / "annotations"
    for form, data in (("vid", samples), ("txt", [{**s, "q": text_question(s)} for s in samples])):
        (annotations / form).mkdir(parents=True, exist_ok=True)
        (annotations / form / "etbench.json").write_text(json.dumps(data))
    return annotations, videos, samples


def good_answer(sample: dict) -> str:
    """An answer in the format E.T. Bench asks for, right by the ground truth."""
    task = sample["task"]
    if task in ("rar", "eca", "rvq"):
        return f"({OPTION_LETTERS[sample['p']]})"
    if task == "gvq":
        start, end = sample["tgt"]
        return f"({OPTION_LETTERS[sample['p']]}) The event happens in {start} - {end} seconds."
    if task in ("tvg", "epm"):
        return f"The event happens in {sample['tgt'][0]} - {sample['tgt'][1]} seconds."
    if task == "vhd":
        windows = sample["tgt"][0] if isinstance(sample["tgt"][0][0], list) else sample["tgt"]
        return f"The highlight moment happens in {round(sum(windows[0]) / 2, 2)} seconds."
    if task in ("dvc", "slc"):
        return "\n".join(f"{s} - {e} seconds, {caption}." for (s, e), caption in zip(sample["tgt"], sample["g"]))
    return "The events happen in " + ", ".join(f"{s} - {e}" for s, e in sample["tgt"]) + " seconds."
