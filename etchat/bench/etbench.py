"""Projecting a measured inference run onto the full E.T. Bench (7,289 samples) on the same machine.

The projection is linear in the measured per-stage costs: video reading, ViT and compressor per frame, LLM prefill
per prefill token (frames + prompt), and generation (plus anything not in a stage) per sample. The frame count of the
benchmark comes from its annotation file when given (`duration` of each sample at 1 fps), else from the published
total video length (251.4 h over its 7,289 samples, i.e. about 124 frames per sample at 1 fps).
"""

from __future__ import annotations

import glob
import json
import math
import os

ETBENCH_SAMPLES = 7289
ETBENCH_VIDEO_HOURS = 251.4
FRAME_STAGES = ("decode", "vision", "compressor")


def etbench_frame_counts(anno_path: str | None = None) -> tuple[int, int, str]:
    """(number of samples, total frames at 1 fps, where the figures come from)."""
    if anno_path is None:
        total = round(ETBENCH_VIDEO_HOURS * 3600)
        return ETBENCH_SAMPLES, total, f"published total length {ETBENCH_VIDEO_HOURS} h"
    paths = sorted(glob.glob(os.path.join(anno_path, "*.json"))) if os.path.isdir(anno_path) else [anno_path]
    if not paths:
        raise FileNotFoundError(f"No E.T. Bench annotation files in {anno_path}")
    frames = []
    for path in paths:
        with open(path) as f:
            samples = json.load(f)
        for i, sample in enumerate(samples):
            if "duration" not in sample:
                raise ValueError(f"{path}: sample {i} (idx {sample.get('idx')}) has no 'duration'")
            frames.append(max(1, math.ceil(float(sample["duration"]))))
    return len(frames), sum(frames), f"durations in {anno_path}"


def per_unit_costs(result: dict) -> dict:
    """Seconds per frame, per prefill token and per sample from one run's stage split."""
    stages = result["stages"]
    frames, samples = result["frames"], result["samples"]
    prefill_tokens = frames + result["prompt_tokens"]
    per_sample_stages = stages.get("generation", 0.0) + stages.get("other", 0.0)
    return {
        "per_frame": sum(stages.get(s, 0.0) for s in FRAME_STAGES) / frames,
        "per_prefill_token": stages.get("prefill", 0.0) / prefill_tokens,
        "per_sample": per_sample_stages / samples,
        "prompt_tokens_per_sample": result["prompt_tokens"] / samples,
    }


def project_minutes(result: dict, num_samples: int, total_frames: int) -> float:
    costs = per_unit_costs(result)
    prefill_tokens = total_frames + num_samples * costs["prompt_tokens_per_sample"]
    seconds = (
        num_samples * costs["per_sample"]
        + total_frames * costs["per_frame"]
        + prefill_tokens * costs["per_prefill_token"]
    )
    return seconds / 60
