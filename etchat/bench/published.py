"""What the published implementation does per sample where this project does it differently, for the baseline.

The `published` configuration of the `infer` scenario must cost what the published inference script costs, not what
this project's faster code costs. Where the two differ only in speed, the published steps are replayed here on plain
torch (the published code uses torchvision) with the same results.

`published_transform`: its `clip_center_224` converts every whole frame to float first (`ToTensor`), resizes the
short side to 224 (torchvision's `Resize`, which returns a frame of the right size untouched), crops the central
square and always interpolates it to 224 x 224 (an identity on an already square crop, but computed), then
normalises out of place.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from etchat.constants import CLIP_MEAN, CLIP_STD
from etchat.data.transforms import short_side_size


def published_transform(frames: torch.Tensor, size: int = 224) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> normalised float (T, 3, size, size), step by step as the published code runs it."""
    clip = frames.float().permute(0, 3, 1, 2) / 255
    height, width = short_side_size(clip.shape[-2], clip.shape[-1], size)
    if (height, width) != tuple(clip.shape[-2:]):
        clip = F.interpolate(clip, size=(height, width), mode="bilinear", antialias=True)
    side = min(size, height, width)
    top, left = int((height - side) / 2), int((width - side) / 2)
    clip = clip[..., top : top + side, left : left + side]
    clip = F.interpolate(clip, size=(size, size), mode="bilinear", antialias=True)
    mean = clip.new_tensor(CLIP_MEAN)[None, :, None, None]
    std = clip.new_tensor(CLIP_STD)[None, :, None, None]
    return (clip - mean) / std
