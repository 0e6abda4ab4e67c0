import logging
import math
from pathlib import Path

import pytest
import torch

from etchat.model.eva_vit import EVAVisionTransformer, interpolate_pos_embed, load_eva_vit_weights

KEYS_TSV = Path(__file__).parents[1] / "etchat" / "model" / "keys" / "eva_vit_g_pth.tsv"
TINY = dict(patch_size=14, width=32, depth=2, num_heads=2, mlp_dim=64)
BLOCK_PARAMS = {  # name -> shape for width 32, mlp 64, in the layout of eva_vit_g.pth
    "norm1.weight": (32,),
    "norm1.bias": (32,),
    "attn.q_bias": (32,),
    "attn.v_bias": (32,),
    "attn.qkv.weight": (96, 32),
    "attn.proj.weight": (32, 32),
    "attn.proj.bias": (32,),
    "norm2.weight": (32,),
    "norm2.bias": (32,),
    "mlp.fc1.weight": (64, 32),
    "mlp.fc1.bias": (64,),
    "mlp.fc2.weight": (32, 64),
    "mlp.fc2.bias": (32,),
}


def tiny_checkpoint(grid: int, num_blocks: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict written by hand in the eva_vit_g.pth layout (not derived from the model)."""
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape):
        return torch.randn(*shape, generator=generator) * 0.2

    state = {
        "cls_token": rand(1, 1, 32),
        "pos_embed": rand(1, 1 + grid * grid, 32),
        "patch_embed.proj.weight": rand(32, 3, 14, 14),
        "patch_embed.proj.bias": rand(32),
    }
    for i in range(num_blocks):
        for name, shape in BLOCK_PARAMS.items():
            state[f"blocks.{i}.{name}"] = rand(*shape) + (1.0 if name.endswith("norm1.weight") else 0.0)
    return state


def read_tsv_rows() -> list[tuple[str, tuple[int, ...]]]:
    rows = []
    for line in KEYS_TSV.read_text().splitlines():
        if line.strip():
            name, shape = line.split("\t")
            rows.append((name, tuple(int(x) for x in shape.strip("()").split(",") if x.strip())))
    return rows


def test_full_size_names_and_shapes_match_published_file():
    with torch.device("meta"):
        model = EVAVisionTransformer()
    ours = [(name, tuple(t.shape)) for name, t in model.state_dict().items()]
    rows = read_tsv_rows()
    assert len(rows) == 4 + 40 * 13  # the published file has 40 blocks
    used = [(name, shape) for name, shape in rows if not name.startswith("blocks.39.")]
    assert ours == used


def test_load_drops_extra_block_and_values_land(tmp_path, caplog):
    state = tiny_checkpoint(grid=2, num_blocks=3)
    path = tmp_path / "eva_vit_g.pth"
    torch.save(state, path)
    model = EVAVisionTransformer(img_size=28, **TINY)
    with caplog.at_level(logging.INFO, logger="etchat.model.eva_vit"):
        dropped = load_eva_vit_weights(model, path)
    assert sorted(dropped) == sorted(f"blocks.2.{name}" for name in BLOCK_PARAMS)
    assert "blocks" in caplog.text
    loaded = model.state_dict()
    assert loaded.keys() == {k for k in state if not k.startswith("blocks.2.")}
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_load_interpolates_pos_embed():
    state = tiny_checkpoint(grid=2, num_blocks=2)
    # patch field varies along rows only: row 0 -> 0, row 1 -> 1 (in every channel); CLS row is 7
    state["pos_embed"] = torch.tensor([7.0, 0.0, 0.0, 1.0, 1.0]).view(1, 5, 1).expand(1, 5, 32).clone()
    model = EVAVisionTransformer(img_size=56, **TINY)  # grid 4x4
    load_eva_vit_weights(model, state)
    pos = model.pos_embed.detach()
    assert pos.shape == (1, 17, 32)
    assert torch.all(pos[0, 0] == 7.0)
    # Bicubic (A = -0.75, align_corners False, border replicated) 2 -> 4 samples source rows -0.25, 0.25, 0.75,
    # 1.25; worked out by hand from the cubic convolution weights.
    expected_rows = [-0.10546875, 0.2265625, 0.7734375, 1.10546875]
    grid = pos[0, 1:].view(4, 4, 32)
    for row, value in enumerate(expected_rows):
        assert torch.allclose(grid[row], torch.full((4, 32), value), atol=1e-6), row


def test_interpolate_keeps_constant_field():
    pos = torch.cat([torch.full((1, 1, 3), -1.0), torch.tensor([0.5, 2.0, 3.0]).expand(1, 4, 3)], dim=1)
    out = interpolate_pos_embed(pos, 4)
    assert out.shape == (1, 17, 3)
    assert torch.equal(out[0, 0], torch.tensor([-1.0, -1.0, -1.0]))
    assert torch.allclose(out[0, 1:], torch.tensor([0.5, 2.0, 3.0]).expand(16, 3), atol=1e-6)


def test_load_rejects_missing_unexpected_and_misshaped_keys(tmp_path):
    model = EVAVisionTransformer(img_size=28, **TINY)
    state = tiny_checkpoint(grid=2, num_blocks=2)
    del state["blocks.1.attn.v_bias"]
    state["head.weight"] = torch.zeros(3)
    with pytest.raises(RuntimeError, match=r"blocks\.1\.attn\.v_bias.*head\.weight"):
        load_eva_vit_weights(model, state)

    state = tiny_checkpoint(grid=2, num_blocks=2)
    state["blocks.0.mlp.fc1.weight"] = torch.zeros(65, 32)
    path = tmp_path / "bad_shape.pth"
    torch.save(state, path)
    with pytest.raises(RuntimeError, match="bad_shape.pth"):
        load_eva_vit_weights(model, path)

    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_eva_vit_weights(model, tmp_path / "nowhere.pth")
    torch.save({"model": state}, tmp_path / "wrapped.pth")
    with pytest.raises(ValueError, match="wrapped.pth"):
        load_eva_vit_weights(model, tmp_path / "wrapped.pth")


# --- forward against explicit matmuls (float64) ---


def layer_norm(x, weight, bias, eps=1e-6):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * weight + bias


def reference_block(x, p, num_heads):
    width = x.shape[-1]
    head_dim = width // num_heads
    h = layer_norm(x, p["norm1.weight"], p["norm1.bias"])
    w = p["attn.qkv.weight"]
    q = h @ w[:width].T + p["attn.q_bias"]
    k = h @ w[width : 2 * width].T  # no k bias
    v = h @ w[2 * width :].T + p["attn.v_bias"]
    heads = []
    for i in range(num_heads):
        cols = slice(i * head_dim, (i + 1) * head_dim)
        scores = q[:, :, cols] @ k[:, :, cols].transpose(1, 2) / math.sqrt(head_dim)
        weights = torch.exp(scores - scores.amax(-1, keepdim=True))
        weights = weights / weights.sum(-1, keepdim=True)
        heads.append(weights @ v[:, :, cols])
    x = x + torch.cat(heads, -1) @ p["attn.proj.weight"].T + p["attn.proj.bias"]
    h = layer_norm(x, p["norm2.weight"], p["norm2.bias"])
    h = h @ p["mlp.fc1.weight"].T + p["mlp.fc1.bias"]
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
    return x + h @ p["mlp.fc2.weight"].T + p["mlp.fc2.bias"]


def reference_forward(pixels, state, depth, num_heads, patch=14):
    batch, channels, height, width = pixels.shape
    gh, gw = height // patch, width // patch
    # patches in row-major grid order, each flattened as (channel, y, x) like the conv weight
    patches = pixels.reshape(batch, channels, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5)
    patches = patches.reshape(batch, gh * gw, channels * patch * patch)
    w = state["patch_embed.proj.weight"].reshape(state["patch_embed.proj.weight"].shape[0], -1)
    x = patches @ w.T + state["patch_embed.proj.bias"]
    x = torch.cat([state["cls_token"].expand(batch, -1, -1), x], 1) + state["pos_embed"]
    for i in range(depth):
        block = {name: state[f"blocks.{i}.{name}"] for name in BLOCK_PARAMS}
        x = reference_block(x, block, num_heads)
    return x


def test_forward_matches_explicit_computation():
    state = {k: v.double() for k, v in tiny_checkpoint(grid=2, num_blocks=3, seed=1).items()}
    model = EVAVisionTransformer(img_size=28, **TINY).double().eval()
    load_eva_vit_weights(model, state)
    pixels = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        out = model(pixels)
    assert out.shape == (2, 5, 32)
    # built with depth 2: the output is that of block 1, the file's block 2 is ignored, no final norm
    expected = reference_forward(pixels, state, depth=2, num_heads=2)
    assert torch.allclose(out, expected, atol=1e-10)
    tokens = torch.randn(3, 7, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    block0 = reference_block(tokens, {n: state[f"blocks.0.{n}"] for n in BLOCK_PARAMS}, num_heads=2)
    with torch.no_grad():
        assert torch.allclose(model.blocks[0](tokens), block0, atol=1e-10)


def test_gradient_checkpointing_gives_same_output_and_grads():
    torch.manual_seed(0)
    model = EVAVisionTransformer(img_size=28, **TINY).train()
    pixels = torch.randn(2, 3, 28, 28)
    model(pixels).square().sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.gradient_checkpointing = True
    out = model(pixels)
    out.square().sum().backward()
    for name, param in model.named_parameters():
        assert torch.allclose(param.grad, grads[name], atol=1e-5), name


def test_wrong_image_size_is_rejected():
    model = EVAVisionTransformer(img_size=28, **TINY)
    with pytest.raises(ValueError, match="28x28"):
        model(torch.zeros(1, 3, 56, 56))
