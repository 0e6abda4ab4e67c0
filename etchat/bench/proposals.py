"""Changes proposed for code the benchmark does not own, measured as the `ours+proposals` configuration.

They are kept here, applied only to a benchmark run, so their gain can be measured in the same table as the code they
would replace; they give the same outputs (tests/test_bench.py checks it).

1. `encode_videos_per_video`: `ETChatMetaForCausalLM.encode_videos` concatenates the pixels of every video of a
   batch (8 x 150 frames x 3 x 224 x 224 floats = 770 MB) and runs the Q-Former on all frames at once, padding every
   frame's instruction to the longest instruction of the batch. Going video by video and chunk by chunk (vision tower
   then compressor on at most `vision_chunk_size` frames) never builds those tensors, pads each video's instruction
   only to itself, and gives the same frame tokens.
2. `CenterCropNormalize`: for frames whose short side is already the target size (E.T. Bench's compressed videos
   are 224 px), `clip_center_224` converts the whole uint8 frame to float, then crops and normalises a strided view
   in two passes. Cropping the uint8 frames first and normalising in one fused multiply-add gives the same values
   about 2-3x faster.
"""

from __future__ import annotations

import torch

from etchat.constants import CLIP_MEAN, CLIP_STD
from etchat.data.transforms import build_transform


def encode_videos_per_video(model, videos, queries=None, tags=None, vision_chunk_size: int = 64):
    """Drop-in for `model.encode_videos`: per video, per chunk of frames, vision tower then compressor."""
    decoder = model.model
    queries = queries if queries is not None else [""] * len(videos)
    tags = tags if tags is not None else [None] * len(videos)
    dtype = decoder.qformer_query.dtype
    tokens = []
    for video, query, tag in zip(videos, queries, tags):
        if model.config.use_time_tag and tag is not None:
            instructions = [f"Current time: {t}s. {query}" for t in tag]
        else:
            instructions = [query] * video.size(0)
        chunks = []
        for start in range(0, video.size(0), vision_chunk_size):
            pixels = video[start : start + vision_chunk_size].to(model.device)
            with torch.no_grad():  # the vision tower is frozen; the compressor may be training
                features = decoder.vision_tower(pixels, vision_chunk_size)
            chunks.append(decoder.compress_frames(features.to(dtype), instructions[start : start + pixels.size(0)]))
        tokens.append(torch.cat(chunks) if len(chunks) > 1 else chunks[0])
    return tokens


class CenterCropNormalize:
    """`build_transform("clip_center_<size>")` with a fast path for frames whose short side is already `size`."""

    def __init__(self, size: int = 224):
        self.size = size
        self.fallback = build_transform(f"clip_center_{size}", inference=True)
        std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
        self.scale = 1 / (255 * std)
        self.shift = -torch.tensor(CLIP_MEAN).view(1, 3, 1, 1) / std

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.dim() != 4 or frames.dtype != torch.uint8 or min(frames.shape[1:3]) != self.size:
            # Other sizes need a resize; the project's transform also reports malformed input.
            return self.fallback(frames)
        height, width = frames.shape[1:3]
        # Same offsets as the project's center crop: int((length - size) / 2).
        top, left = int((height - self.size) / 2), int((width - self.size) / 2)
        crop = frames[:, top : top + self.size, left : left + self.size].permute(0, 3, 1, 2)
        out = torch.empty(crop.shape, dtype=torch.float32)
        return torch.addcmul(self.shift, crop, self.scale, out=out)
