"""End to end against the published inference code (docs/design.md §1, §4, §5, §8).

`scripts/inference.sh`, run as a user runs it, on raw videos larger than 224 px at several frame rates, must write the
records that the original `infer_etbench.py` (ETBench commit 445f620, transformers 4.44.2, CPU float32, greedy, 64 new
tokens) wrote for the same tiny checkpoint, videos and annotations, field for field; and the frames the project gives
the model must be the original's, bit for bit. The references in tests/reference/original_inference/ were made by
`python -m etchat.bench.original_inference` (which lists every patch it applies to the original), whose
`write_inputs` the test calls to make the same inputs again.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from etchat.bench.original_inference import VIDEOS, frame_digest, write_inputs
from etchat.data.transforms import build_transform
from etchat.data.video import decord_available, load_video

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tests" / "reference" / "original_inference"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return write_inputs(tmp_path_factory.mktemp("original_inference"))


def test_the_inputs_cover_raw_videos_of_several_sizes_and_rates():
    short_sides = {min(v.height, v.width) for v in VIDEOS}
    assert sum(side > 224 for side in short_sides) >= 4 and 224 in short_sides and min(short_sides) < 224
    assert {float(v.fps) for v in VIDEOS} >= {24, 25, 30000 / 1001, 30, 60}


@pytest.mark.parametrize("backend", ["pyav"] + (["decord"] if decord_available() else []))
def test_frames_given_to_the_model_are_the_originals(inputs, backend):
    expected = json.loads((REFERENCE / "frames.json").read_text())
    transform = build_transform("clip_center_224", inference=True)
    for spec in VIDEOS:
        path = inputs["videos"] / spec.name
        clip = load_video(path, fps=1.0, num_threads=1, short_side=transform.size, backend=backend)
        frames = transform(clip.frames)
        reference = expected[spec.name]
        assert (list(frames.shape), clip.tags) == (reference["shape"], reference["tags"]), spec.name
        assert frame_digest(frames) == reference["sha256"], spec.name


@pytest.mark.skipif(not decord_available(), reason="the original reads videos with decord")
def test_inference_script_writes_the_records_of_the_original(inputs, tmp_path):
    pred = tmp_path / "pred"
    env = {
        **os.environ,
        "SKIP_SETUP": "1",
        "SKIP_METRICS": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        "CUDA_VISIBLE_DEVICES": "",
        "ANNO_PATH": str(inputs["annotations"]),
        "VIDEO_PATH": str(inputs["videos"]),
        "PRED_PATH": str(pred),
    }
    command = ["bash", str(ROOT / "scripts" / "inference.sh"), str(inputs["checkpoint"])]
    command += ["--greedy", "--max_new_tokens", "64", "--num_workers", "0"]
    subprocess.run(command, env=env, check=True, cwd=tmp_path, capture_output=True)
    records = json.loads((pred / "etbench.json").read_text())
    expected = json.loads((REFERENCE / "etbench.json").read_text())
    assert len(records) == len(expected)
    for record, reference in zip(records, expected):
        assert record == reference, f"sample {reference['idx']} ({reference['task']}, {reference['video']})"
