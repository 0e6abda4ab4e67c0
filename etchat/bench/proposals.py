"""Changes proposed for code the benchmark does not own, measured as the `ours+proposals` configuration.

They are kept here, applied only to a benchmark run, so their gain can be measured in the same table as the code they
would replace; they give the same outputs (tests/test_bench.py checks it).

1. `encode_videos_per_video`: `ETChatMetaForCausalLM.encode_videos` runs the vision tower video by video but keeps
   the patch features of the whole batch and runs the Q-Former on all its frames at once, padding every frame's
   instruction to the longest instruction of the batch. Going video by video and chunk by chunk (vision tower then
   compressor on at most `vision_chunk_size` frames) bounds that memory, pads each video's instruction only to itself,
   and gives the same frame tokens.
"""

from __future__ import annotations

import torch


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
