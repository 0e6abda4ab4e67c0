import math
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from video_utils import decode_frame_index, index_color, write_test_video

from etchat.data.transforms import (
    build_transform,
    center_crop,
    random_crop_params,
    resize_short_side,
    short_side_size,
    to_float_clip,
)
from etchat.data.video import VideoReadError, frame_image, load_image, load_video

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
BACKENDS = ["decord", "pyav"]


def round_half_even(x: float) -> int:
    # numpy's round, written out: ties go to the even neighbour
    low = math.floor(x)
    if x - low == 0.5:
        return low if low % 2 == 0 else low + 1
    return low if x - low < 0.5 else low + 1


def expected_sampling(num_frames, rate, fps):
    step = rate / fps
    positions = []
    k = 0
    while k * step < num_frames:
        positions.append(k * step)
        k += 1
    indices = [min(max(round_half_even(p), 0), num_frames - 1) for p in positions]
    return indices, [round(i / rate, 1) for i in indices], round(num_frames / rate, 3)


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    specs = {"12f_3fps": (12, 3), "25f_12.5fps": (25, 12.5), "40f_10fps": (40, 10)}
    paths = {}
    for name, (num_frames, fps) in specs.items():
        paths[name] = root / f"{name}.mp4"
        write_test_video(paths[name], num_frames, fps, size=(48, 64))
    return paths, specs


def test_hand_computed_sampling_examples():
    # written out by hand: step 1.5 -> 0, 1.5, 3, 4.5, 6, 7.5, 9, 10.5, ties to even
    assert expected_sampling(12, 3, 2)[0] == [0, 2, 3, 4, 6, 8, 9, 10]
    assert expected_sampling(12, 3, 2)[1] == [0.0, 0.7, 1.0, 1.3, 2.0, 2.7, 3.0, 3.3]
    # step 12.5 -> 0, 12.5 -> 12 (tie to even)
    assert expected_sampling(25, 12.5, 1) == ([0, 12], [0.0, 1.0], 2.0)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fps", [1.0, 2.0, 0.5, 3.0, 4.0])
@pytest.mark.parametrize("name", ["12f_3fps", "25f_12.5fps", "40f_10fps"])
def test_sampling_matches_formula(videos, name, fps, backend):
    paths, specs = videos
    num_frames, rate = specs[name]
    clip = load_video(paths[name], fps=fps, backend=backend)
    indices, tags, duration = expected_sampling(num_frames, rate, fps)
    assert clip.indices == indices
    assert clip.tags == tags
    assert clip.duration == duration
    assert clip.avg_fps == pytest.approx(rate)
    assert clip.frames.dtype == torch.uint8
    assert clip.frames.shape == (len(indices), 48, 64, 3)
    # the decoded pixels are the frames that were asked for
    assert [decode_frame_index(f.numpy()) for f in clip.frames] == indices
    for frame, index in zip(clip.frames, indices):
        assert np.abs(frame.numpy().astype(int) - np.array(index_color(index))).max() <= 12


def test_one_fps_example(videos):
    paths, _ = videos
    clip = load_video(paths["12f_3fps"], fps=1)
    assert clip.indices == [0, 3, 6, 9]
    assert clip.tags == [0.0, 1.0, 2.0, 3.0]
    assert clip.duration == 4.0


def test_auto_falls_back_to_pyav_when_decord_fails(videos, monkeypatch):
    import etchat.data.video as video

    def failing_decord(path, *args):
        raise VideoReadError(f"Cannot read {path} with decord: injected failure")

    monkeypatch.setattr(video, "_read_decord", failing_decord)
    path = videos[0]["12f_3fps"]
    with pytest.raises(VideoReadError, match="12f_3fps.mp4"):
        load_video(path, backend="decord", num_threads=2)
    clip = load_video(path, fps=1)
    assert clip.indices == [0, 3, 6, 9]
    assert [decode_frame_index(f.numpy()) for f in clip.frames] == [0, 3, 6, 9]


def test_backends_agree(videos):
    paths, _ = videos
    a = load_video(paths["25f_12.5fps"], fps=2, backend="decord")
    b = load_video(paths["25f_12.5fps"], fps=2, backend="pyav")
    assert (a.indices, a.tags, a.duration) == (b.indices, b.tags, b.duration)
    assert (a.frames.int() - b.frames.int()).abs().max() <= 6


def test_pyav_skipping_unwanted_frames_gives_the_frames_of_a_full_decode(tmp_path, monkeypatch):
    # libx264's defaults use B-frames, some of which no other frame references: those the sampling does not keep
    # may be dropped by the decoder, but every kept frame must be the one a frame-by-frame decode gives.
    import etchat.data.video as video_module

    path = tmp_path / "gradient.mp4"
    write_test_video(path, 60, 6, size=(48, 64), color_fn=lambda i: (4 * i, 255 - 4 * i, (37 * i) % 256))
    skipped = load_video(path, fps=1.5, backend="pyav")
    monkeypatch.setattr(video_module, "_decode_skipping", lambda *args: None)
    full = load_video(path, fps=1.5, backend="pyav")
    assert skipped.indices == full.indices == expected_sampling(60, 6, 1.5)[0]
    assert torch.equal(skipped.frames, full.frames)
    assert torch.equal(skipped.frames, load_video(path, fps=1.5, backend="decord").frames)


def test_auto_uses_pyav_without_decord(videos, monkeypatch):
    paths, specs = videos
    monkeypatch.setitem(sys.modules, "decord", None)  # makes `import decord` raise ImportError
    clip = load_video(paths["40f_10fps"], fps=1)
    assert clip.indices == expected_sampling(*specs["40f_10fps"], 1)[0]
    with pytest.raises(ImportError, match="decord"):
        load_video(paths["40f_10fps"], backend="decord")


@pytest.mark.parametrize("backend", BACKENDS)
def test_length_limits_name_the_file(videos, backend):
    paths, _ = videos
    path = paths["12f_3fps"]  # 4.0 s
    with pytest.raises(ValueError, match=r"12f_3fps\.mp4.*too short.*4\.0.*5"):
        load_video(path, min_len=5, backend=backend)
    with pytest.raises(ValueError, match=r"12f_3fps\.mp4.*too long.*4\.0.*3\.5"):
        load_video(path, max_len=3.5, backend=backend)
    assert load_video(path, min_len=4, max_len=4, backend=backend).duration == 4.0
    assert load_video(path, min_len=-1, max_len=-1, backend=backend).duration == 4.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_unreadable_files_raise_video_read_error(tmp_path, videos, backend):
    missing = tmp_path / "missing.mp4"
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(videos[0]["40f_10fps"].read_bytes()[:600])
    for path in (missing, empty, junk, truncated):
        with pytest.raises(VideoReadError, match=path.name):
            load_video(path, backend=backend)


def test_bad_arguments(videos):
    path = videos[0]["12f_3fps"]
    with pytest.raises(ValueError, match="backend"):
        load_video(path, backend="opencv")
    with pytest.raises(ValueError, match="fps"):
        load_video(path, fps=0)


def test_load_image_and_pad_to_square(tmp_path):
    pixels = np.arange(2 * 4 * 3, dtype=np.uint8).reshape(2, 4, 3) * 10
    Image.fromarray(pixels).save(tmp_path / "wide.png")
    Image.fromarray(pixels.transpose(1, 0, 2).copy()).save(tmp_path / "tall.png")

    image = load_image(tmp_path / "wide.png")
    assert image.dtype == torch.uint8 and image.shape == (1, 2, 4, 3)
    assert torch.equal(image[0], torch.from_numpy(pixels))

    pad = (122, 116, 104)  # int(255 * CLIP mean) per channel, worked out by hand
    square = load_image(tmp_path / "wide.png", pad_to_square=True)[0].numpy()
    assert square.shape == (4, 4, 3)
    assert (square[0] == pad).all() and (square[3] == pad).all()
    assert (square[1:3] == pixels).all()

    square = load_image(tmp_path / "tall.png", pad_to_square=True)[0].numpy()
    assert (square[:, 0] == pad).all() and (square[:, 3] == pad).all()
    assert (square[:, 1:3] == pixels.transpose(1, 0, 2)).all()


def test_load_image_errors(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    for name in ("missing.jpg", "empty.jpg", "junk.jpg"):
        with pytest.raises(VideoReadError, match=name):
            load_image(tmp_path / name)


# --- transforms ---


def normalized(value, channel):
    return (value - CLIP_MEAN[channel]) / CLIP_STD[channel]


def test_short_side_size_truncates_like_torchvision():
    assert short_side_size(300, 400, 224) == (224, 298)  # 224 * 400 / 300 = 298.67
    assert short_side_size(400, 300, 224) == (298, 224)
    assert short_side_size(360, 640, 224) == (224, 398)  # 398.22
    assert short_side_size(224, 500, 224) == (224, 500)
    assert short_side_size(100, 100, 224) == (224, 224)


def test_center_crop_offset_truncates():
    # width 5 -> crop 2: offset int(1.5) = 1 (columns 1 and 2), as in the published preprocessing
    clip = torch.arange(5.0).expand(1, 3, 2, 5)
    assert center_crop(clip, 2)[0, 0].tolist() == [[1.0, 2.0], [1.0, 2.0]]
    clip = torch.arange(6.0).expand(1, 3, 2, 6)  # offset 2
    assert center_crop(clip, 2)[0, 0].tolist() == [[2.0, 3.0], [2.0, 3.0]]


def test_center_transform_hand_values():
    # 2 x 5 frame, columns 0, 10, ..., 40 in every channel: no resize, crop columns 1..2, then normalize
    frames = (torch.arange(5, dtype=torch.uint8) * 10).expand(1, 2, 5).unsqueeze(-1).expand(1, 2, 5, 3).contiguous()
    out = build_transform("clip_center_2", inference=True)(frames)
    assert out.shape == (1, 3, 2, 2)
    for channel in range(3):
        expected = [normalized(10 / 255, channel), normalized(20 / 255, channel)]
        assert out[0, channel, 0].tolist() == pytest.approx(expected, abs=1e-6)
        assert out[0, channel, 1].tolist() == pytest.approx(expected, abs=1e-6)


def test_antialiased_downscale_hand_values():
    # 4x4 -> 2x2, columns [0, 0, 1, 1]. Halving with the antialiased bilinear (triangle of radius 2) weighs the
    # input pixels 0..2 as 3/4, 3/4, 1/4 for the first output (renormalized): 1/7; symmetrically 6/7 for the second.
    clip = torch.tensor([0.0, 0.0, 1.0, 1.0]).expand(1, 3, 4, 4)
    out = resize_short_side(clip, 2)
    assert out.shape == (1, 3, 2, 2)
    for row in out[0, 0].tolist():
        assert row == pytest.approx([1 / 7, 6 / 7], abs=1e-6)


def test_full_size_transform_on_flat_frames():
    frames = torch.zeros(3, 360, 640, 3, dtype=torch.uint8)
    frames[..., 0], frames[..., 1], frames[..., 2] = 200, 100, 50
    frames[1] = 255
    out = build_transform("clip_center_224")(frames)
    assert out.shape == (3, 3, 224, 224) and out.dtype == torch.float32
    for channel, value in enumerate((200, 100, 50)):
        assert torch.allclose(out[0, channel], torch.tensor(normalized(value / 255, channel)), atol=1e-5)
        assert torch.allclose(out[1, channel], torch.tensor(normalized(1.0, channel)), atol=1e-5)


def test_random_crop_params_respect_scale():
    generator = torch.Generator().manual_seed(0)
    for height, width in [(224, 298), (300, 224), (224, 224)]:
        for _ in range(200):
            top, left, side = random_crop_params(height, width, 224, generator=generator)
            assert round(math.sqrt(0.8) * 224) <= side <= 224
            assert 0 <= top <= height - side and 0 <= left <= width - side


def test_random_transform_shape_same_crop_for_all_frames_and_inference_is_center():
    frames = torch.randint(0, 256, (1, 240, 320, 3), dtype=torch.uint8).expand(4, -1, -1, -1).contiguous()
    out = build_transform("clip_random_224")(frames)
    assert out.shape == (4, 3, 224, 224)
    assert all(torch.equal(out[0], out[i]) for i in range(1, 4))

    center = build_transform("clip_center_224")(frames)
    assert torch.equal(build_transform("clip_random_224", inference=True)(frames), center)


def test_random_crop_full_scale_on_square_input_is_identity():
    frames = torch.randint(0, 256, (2, 8, 8, 3), dtype=torch.uint8)
    transform = build_transform("clip_random_8")
    transform.scale = (1.0, 1.0)
    center = build_transform("clip_center_8")(frames)
    assert torch.equal(transform(frames), center)


def test_transform_errors():
    for name in ("clip_224", "siglip_center_224", "clip_left_224", "clip_center_x"):
        with pytest.raises(ValueError, match=name):
            build_transform(name)
    with pytest.raises(ValueError, match="uint8"):
        build_transform("clip_center_224")(torch.zeros(1, 8, 8, 3))  # float, but not (T, C, H, W)


@pytest.mark.parametrize("shape", [(2, 224, 300, 3), (2, 401, 224, 3), (1, 224, 224, 3)])
def test_center_transform_fast_path_equals_resize_then_crop(shape):
    from etchat.data.transforms import center_crop, normalize, resize_short_side, to_float_clip

    frames = torch.randint(0, 256, shape, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    expected = normalize(center_crop(resize_short_side(to_float_clip(frames), 224), 224))
    assert torch.equal(build_transform("clip_center_224", inference=True)(frames), expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_large_frames_are_scaled_while_decoding(videos, backend):
    paths, _ = videos  # 48 x 64 frames
    full = load_video(paths["12f_3fps"], fps=1, backend=backend)
    small = load_video(paths["12f_3fps"], fps=1, backend=backend, short_side=24)
    assert tuple(full.frames.shape) == (4, 48, 64, 3)
    # float (T, C, h, w): short side 24, long side int(24 * 64 / 48), resized from the full-size frames exactly as
    # the transform would resize the whole clip
    assert tuple(small.frames.shape) == (4, 3, 24, 32) and small.frames.dtype == torch.float32
    assert torch.equal(small.frames, resize_short_side(to_float_clip(full.frames), 24))
    assert (small.indices, small.tags, small.duration) == (full.indices, full.tags, full.duration)
    # Flat-colour frames keep their colour, so each still tells its index.
    assert [decode_frame_index(frame_image(small.frames, i)) for i in range(4)] == [0, 3, 6, 9]
    # Frames no larger than the target are decoded as stored.
    assert torch.equal(load_video(paths["12f_3fps"], fps=1, backend=backend, short_side=48).frames, full.frames)


def test_scaled_decoding_gives_what_the_transform_gives_from_full_frames(tmp_path):
    path = tmp_path / "gradient.mp4"
    write_test_video(path, 6, 3, size=(96, 128), color_fn=lambda i: (40 * i, 200 - 30 * i, 90))
    transform = build_transform("clip_center_32", inference=True)
    for backend in BACKENDS:
        scaled = transform(load_video(path, backend=backend, short_side=32).frames)
        reference = transform(load_video(path, backend=backend).frames)
        assert scaled.shape == reference.shape == (2, 3, 32, 32)
        assert torch.equal(scaled, reference), backend


def test_a_float_clip_resized_while_decoding_is_transformed_without_touching_it():
    frames = torch.randint(0, 256, (2, 60, 90, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    resized = resize_short_side(to_float_clip(frames), 32)  # what load_video(short_side=32) holds
    before = resized.clone()
    transform = build_transform("clip_center_32", inference=True)
    assert torch.equal(transform(resized), transform(frames))
    assert torch.equal(resized, before)
    assert frame_image(resized, 0).shape == (32, 48, 3) and frame_image(resized, 0).dtype == np.uint8
