"""Frame preprocessing for the vision encoder, in plain torch (docs/design.md §1).

A transform maps a uint8 clip (T, H, W, C) to a normalized float clip (T, C, size, size); every frame of a clip gets
the same geometry. It also takes a float clip (T, C, H, W) in [0, 1], as `etchat.data.video.load_video` gives when it
resized large frames while decoding (the transform's first two steps, done frame by frame). Names follow the original
configs: ``clip_center_224`` and ``clip_random_224``.

Geometry matches the published preprocessing: the short side is resized like torchvision's ``Resize(size)`` (long
side ``int(size * long / short)``, bilinear with antialias), then a square is cropped. The center crop offset is
``int((length - size) / 2)`` as in the original code (torchvision's CenterCrop would round instead).
"""

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from etchat.constants import CLIP_MEAN, CLIP_STD

CROP_TYPES = ("center", "random")


def to_float_clip(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (T, H, W, C) -> float (T, C, H, W) in [0, 1]."""
    if frames.dim() != 4 or frames.shape[-1] != 3 or frames.dtype != torch.uint8:
        raise ValueError(f"Expected a uint8 clip of shape (T, H, W, 3), got {tuple(frames.shape)} {frames.dtype}")
    # Copying into a contiguous float tensor first, then scaling in place, is ~3x faster than `.float() / 255` on the
    # permuted view, with the same values.
    clip = torch.empty(frames.shape[0], 3, *frames.shape[1:3])
    clip.copy_(frames.permute(0, 3, 1, 2))
    return clip.div_(255)


def resize_to(clip: torch.Tensor, height: int, width: int) -> torch.Tensor:
    if clip.shape[-2:] == (height, width):
        return clip
    return F.interpolate(clip, size=(height, width), mode="bilinear", align_corners=False, antialias=True)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Output (height, width) of torchvision's ``Resize(size)``: short side to ``size``, long side truncated."""
    short, long = min(height, width), max(height, width)
    if short == size:
        return height, width
    new_long = int(size * long / short)
    return (size, new_long) if height <= width else (new_long, size)


def resize_short_side(clip: torch.Tensor, size: int) -> torch.Tensor:
    return resize_to(clip, *short_side_size(clip.shape[-2], clip.shape[-1], size))


def center_crop(clip: torch.Tensor, size: int) -> torch.Tensor:
    """Crop the central square of side ``min(size, H, W)`` and resize it to ``size`` x ``size``."""
    height, width = clip.shape[-2:]
    side = min(size, height, width)
    top, left = int((height - side) / 2), int((width - side) / 2)
    return resize_to(clip[..., top : top + side, left : left + side], size, size)


def random_crop_params(
    height: int,
    width: int,
    size: int,
    scale: tuple[float, float] = (0.8, 1.0),
    generator: torch.Generator | None = None,
) -> tuple[int, int, int]:
    """(top, left, side) of a random square whose area is ``scale`` times ``size ** 2``.

    Draws random numbers in the same order as torchvision's ``RandomResizedCrop.get_params`` with ratio (1, 1), so a
    seeded run crops where the original would.
    """
    area = height * width
    rel = size * size / area
    low, high = scale[0] * rel, scale[1] * rel
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(low, high, generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(0.0, 0.0, generator=generator).item())
        side_w = int(round(math.sqrt(target_area * aspect)))
        side_h = int(round(math.sqrt(target_area / aspect)))
        if 0 < side_w <= width and 0 < side_h <= height:
            top = int(torch.randint(0, height - side_h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - side_w + 1, size=(1,), generator=generator).item())
            return top, left, side_h
    # No valid draw (only possible when the clip is smaller than the crop): take the central square.
    side = min(height, width)
    return (height - side) // 2, (width - side) // 2, side


def random_resized_crop(
    clip: torch.Tensor,
    size: int,
    scale: tuple[float, float] = (0.8, 1.0),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    top, left, side = random_crop_params(clip.shape[-2], clip.shape[-1], size, scale, generator)
    return resize_to(clip[..., top : top + side, left : left + side], size, size)


def normalize(clip: torch.Tensor, mean=CLIP_MEAN, std=CLIP_STD, inplace: bool = False) -> torch.Tensor:
    mean = clip.new_tensor(mean)[None, :, None, None]
    std = clip.new_tensor(std)[None, :, None, None]
    return clip.sub_(mean).div_(std) if inplace else (clip - mean) / std


class ClipTransform:
    """uint8 (T, H, W, C) -> normalized float (T, C, size, size)."""

    def __init__(self, size: int, random_crop: bool, scale: tuple[float, float] = (0.8, 1.0)):
        self.size = size
        self.random_crop = random_crop
        self.scale = scale

    def __call__(self, frames: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if frames.is_floating_point() and frames.dim() == 4 and frames.shape[1] == 3:
            # Already float in [0, 1] (resized while decoding): the caller's tensor, so nothing is done in place.
            return normalize(self._crop(resize_short_side(frames, self.size), generator))
        if not self.random_crop and frames.dim() == 4 and min(frames.shape[1:3]) == self.size:
            # Short side already at size (e.g. videos compressed to 224 px): the resize is the identity, so crop the
            # uint8 frames before converting; same values, a fraction of the float work.
            height, width = frames.shape[1:3]
            top, left = int((height - self.size) / 2), int((width - self.size) / 2)
            frames = frames[:, top : top + self.size, left : left + self.size]
        clip = self._crop(resize_short_side(to_float_clip(frames), self.size), generator)
        return normalize(clip, inplace=True)  # clip is a tensor made here, never the caller's

    def _crop(self, clip: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.random_crop:
            return random_resized_crop(clip, self.size, self.scale, generator)
        return center_crop(clip, self.size)

    def __repr__(self) -> str:
        crop = f"random, scale={self.scale}" if self.random_crop else "center"
        return f"{type(self).__name__}(size={self.size}, crop={crop})"


def build_transform(name: str, inference: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """Transform named ``clip_{center|random}_{size}``; a random crop becomes a center crop at inference."""
    parts = name.split("_")
    if len(parts) != 3 or parts[0] != "clip" or parts[1] not in CROP_TYPES or not parts[2].isdigit():
        raise ValueError(f"Unknown transform {name!r}, expected 'clip_center_<size>' or 'clip_random_<size>'")
    return ClipTransform(int(parts[2]), random_crop=parts[1] == "random" and not inference)
