"""EVA-ViT-G image encoder (docs/design.md §2), with parameter names of the published ``eva_vit_g.pth``.

The published file holds 40 pre-norm blocks; E.T. Chat builds 39 and returns the output of the last built block
(no final norm). ``load_eva_vit_weights`` drops the unused blocks and resizes the position embedding when the patch
grid differs.
"""

import logging
import math
import os
import re

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

logger = logging.getLogger(__name__)

NUM_EXTRA_TOKENS = 1  # the CLS token, which has a position embedding but no place on the patch grid
BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.")


class EVAPatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch_size: int, width: int, in_channels: int = 3):
        super().__init__()
        self.img_size = img_size
        self.grid_size = img_size // patch_size
        self.proj = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"Expected {self.img_size}x{self.img_size} images, got {tuple(pixels.shape)}")
        return self.proj(pixels).flatten(2).transpose(1, 2)


class EVAAttention(nn.Module):
    """Multi-head self-attention whose qkv projection has learned biases for q and v only."""

    def __init__(self, width: int, num_heads: int):
        super().__init__()
        if width % num_heads:
            raise ValueError(f"width {width} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = width // num_heads
        self.q_bias = nn.Parameter(torch.zeros(width))
        self.v_bias = nn.Parameter(torch.zeros(width))
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        qkv_bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, qkv_bias)
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.head_dim**-0.5)
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))


class EVAMlp(nn.Module):
    def __init__(self, width: int, mlp_dim: int):
        super().__init__()
        self.fc1 = nn.Linear(width, mlp_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_dim, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class EVABlock(nn.Module):
    def __init__(self, width: int, num_heads: int, mlp_dim: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, eps=eps)
        self.attn = EVAAttention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, eps=eps)
        self.mlp = EVAMlp(width, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class EVAVisionTransformer(nn.Module):
    """Images (B, 3, img_size, img_size) -> features (B, 1 + num_patches, width) of the last built block."""

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 14,
        width: int = 1408,
        depth: int = 39,
        num_heads: int = 16,
        mlp_dim: int = 6144,
        eps: float = 1e-6,
    ):
        super().__init__()
        self.width = width
        self.patch_embed = EVAPatchEmbed(img_size, patch_size, width)
        self.num_patches = self.patch_embed.grid_size**2
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, NUM_EXTRA_TOKENS + self.num_patches, width))
        self.blocks = nn.ModuleList(EVABlock(width, num_heads, mlp_dim, eps) for _ in range(depth))
        self.gradient_checkpointing = False
        self._init_weights()

    def _init_weights(self) -> None:
        # Only matters for tests and shape checks: real use always loads eva_vit_g.pth.
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(pixels.to(self.cls_token.dtype))
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1) + self.pos_embed
        use_checkpoint = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, use_reentrant=False) if use_checkpoint else block(x)
        return x


def _load_state_dict_file(path: str) -> dict[str, torch.Tensor]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"EVA-ViT weights not found: {path}")
    state_dict = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state_dict, dict) or not all(isinstance(v, torch.Tensor) for v in state_dict.values()):
        raise ValueError(f"{path} is not a plain state dict of tensors (expected the eva_vit_g.pth format)")
    return state_dict


def _short_list(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}, ... and {len(keys) - limit} more]" if len(keys) > limit else f"[{shown}]"


def interpolate_pos_embed(pos_embed: torch.Tensor, grid_size: int) -> torch.Tensor:
    """Resize a (1, 1 + g*g, C) position embedding to a ``grid_size`` grid (bicubic); the CLS row is kept."""
    extra, patches = pos_embed[:, :NUM_EXTRA_TOKENS], pos_embed[:, NUM_EXTRA_TOKENS:]
    old_grid = math.isqrt(patches.shape[1])
    if old_grid * old_grid != patches.shape[1]:
        raise ValueError(f"pos_embed has {patches.shape[1]} patch positions, which is not a square grid")
    channels = patches.shape[-1]
    grid = patches.float().reshape(1, old_grid, old_grid, channels).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(grid_size, grid_size), mode="bicubic", align_corners=False)
    patches = grid.permute(0, 2, 3, 1).reshape(1, grid_size * grid_size, channels).to(pos_embed.dtype)
    return torch.cat((extra, patches), dim=1)


def load_eva_vit_weights(model: EVAVisionTransformer, path_or_state_dict) -> list[str]:
    """Load ``eva_vit_g.pth`` (a path or an already loaded state dict) into ``model``; return the dropped keys.

    Blocks beyond the model's depth are dropped; any other missing, unexpected or mis-shaped key is an error.
    """
    if isinstance(path_or_state_dict, (str, os.PathLike)):
        source = os.fspath(path_or_state_dict)
        state_dict = _load_state_dict_file(source)
    else:
        source = "the given state dict"
        state_dict = path_or_state_dict
    state_dict = dict(state_dict)

    depth = len(model.blocks)
    dropped = [key for key in state_dict if (m := BLOCK_KEY.match(key)) and int(m.group(1)) >= depth]
    for key in dropped:
        del state_dict[key]
    if dropped:
        logger.info("Dropped %d keys of blocks beyond depth %d from %s", len(dropped), depth, source)

    pos_embed = state_dict.get("pos_embed")
    if pos_embed is not None and pos_embed.shape[1] != model.pos_embed.shape[1]:
        grid_size = model.patch_embed.grid_size
        new_length = NUM_EXTRA_TOKENS + grid_size**2
        logger.info("Interpolating pos_embed of %s from %d to %d positions", source, pos_embed.shape[1], new_length)
        state_dict["pos_embed"] = interpolate_pos_embed(pos_embed, grid_size)

    expected = model.state_dict().keys()
    missing = sorted(expected - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected)
    if missing or unexpected:
        raise RuntimeError(
            f"Cannot load EVA-ViT weights from {source}: "
            f"missing keys {_short_list(missing)}, unexpected keys {_short_list(unexpected)}"
        )
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:  # shape mismatches
        raise RuntimeError(f"Cannot load EVA-ViT weights from {source}: {e}") from e
    return dropped
