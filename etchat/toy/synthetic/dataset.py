"""The whole synthetic data set: stage files, the E.T.-Bench-style test split, the manifest, and `generate`."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field

from etchat.io import write_json_atomic, write_jsonl_atomic
from etchat.toy.synthetic.benchmarks import (
    DVC_ANNOTATION,
    QVHIGHLIGHTS_ANNOTATION,
    dense_caption_references,
    qvhighlights_line,
)
from etchat.toy.synthetic.render import encode_video_job, image_job, pick_codec, run_jobs
from etchat.toy.synthetic.scenes import (
    ANNOTATION_DRAWS,
    SOURCE,
    SPEC_DRAWS,
    ImageSpec,
    VideoSpec,
    rng_for,
    sample_image_spec,
    sample_video_spec,
)
from etchat.toy.synthetic.wording import (
    ETBENCH_TASKS,
    TASKS,
    bench_sample,
    image_caption,
    image_qa,
    plain_conversation,
    qa_conversation,
    stage3_sample,
    task_items,
    text_qa,
    video_caption,
    video_qa,
)

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 2


@dataclass(frozen=True)
class SyntheticConfig:
    """What to generate; the command line of `python -m etchat.toy.synthetic` has one flag per field."""

    seed: int = field(default=0, metadata={"help": "seed of every random draw"})
    num_train_videos: int = field(default=300, metadata={"help": "videos of the training stages"})
    num_test_videos: int = field(default=60, metadata={"help": "videos of the test split"})
    num_images: int = field(default=200, metadata={"help": "still images for stages 1-2"})
    fps: int = field(default=3, metadata={"help": "frame rate of the encoded videos"})
    size: int = field(default=224, metadata={"help": "frame width = height in pixels (even)"})
    min_len: int = field(default=20, metadata={"help": "shortest video in seconds"})
    max_len: int = field(default=90, metadata={"help": "longest video in seconds"})
    tasks: tuple[str, ...] = field(default=TASKS, metadata={"help": "stage 3 / test tasks"})

    def validate(self) -> None:
        if self.size < 32 or self.size % 2:
            raise ValueError(f"size must be an even number >= 32 (libx264 needs even sides), got {self.size}")
        if self.fps < 1:
            raise ValueError(f"fps must be a positive integer, got {self.fps}")
        if not 8 <= self.min_len <= self.max_len:
            raise ValueError(f"need 8 <= min_len <= max_len, got min_len={self.min_len} max_len={self.max_len}")
        if self.num_train_videos < 1 or self.num_test_videos < 1 or self.num_images < 0:
            raise ValueError("need at least one train and one test video and a non-negative image count")
        unknown = [task for task in self.tasks if task not in TASKS]
        if unknown or not self.tasks:
            raise ValueError(f"tasks must be a non-empty subset of {TASKS}, got unknown {unknown}")


def video_specs(config: SyntheticConfig, split: str) -> list[VideoSpec]:
    count = config.num_train_videos if split == "train" else config.num_test_videos
    return [
        sample_video_spec(
            rng_for(config.seed, split, i, SPEC_DRAWS),
            f"videos/{split}/{split}_{i:05d}.mp4",
            split,
            config.size,
            config.min_len,
            config.max_len,
        )
        for i in range(count)
    ]


def image_specs(config: SyntheticConfig) -> list[ImageSpec]:
    return [
        sample_image_spec(rng_for(config.seed, "image", i, SPEC_DRAWS), f"images/image_{i:05d}.png", config.size)
        for i in range(config.num_images)
    ]


def _scene_key(spec: VideoSpec) -> tuple:
    return (spec.duration, spec.background, spec.events, spec.distractors)


def check_disjoint_splits(train: list[VideoSpec], test: list[VideoSpec]) -> None:
    """Train and test never share a video file, nor a video's content."""
    shared_files = {s.name for s in train} & {s.name for s in test}
    assert not shared_files, f"train and test share video files: {sorted(shared_files)[:5]}"
    shared_scenes = {_scene_key(s) for s in train} & {_scene_key(s) for s in test}
    assert not shared_scenes, "a test video repeats a training video's content"


def build_stage1(train: list[VideoSpec], images: list[ImageSpec]) -> list[dict]:
    samples = [
        {"id": f"stage1_{s.name}", "image": s.name, "conversations": plain_conversation(image_caption(s))}
        for s in images
    ]
    for spec in train:
        sample = {"id": f"stage1_{spec.name}", "video": spec.name, "duration": float(spec.duration)}
        sample["conversations"] = plain_conversation(video_caption(spec))
        samples.append(sample)
    return [dict(sample, source=SOURCE, task="caption") for sample in samples]


def build_stage2(config: SyntheticConfig, train: list[VideoSpec], images: list[ImageSpec]) -> list[dict]:
    samples = []
    for i, spec in enumerate(images):
        pairs = image_qa(spec, rng_for(config.seed, "image", i, ANNOTATION_DRAWS))
        samples.append({"id": f"stage2_{spec.name}", "image": spec.name, "conversations": qa_conversation(pairs, True)})
    for i, spec in enumerate(train):
        pairs = video_qa(spec, rng_for(config.seed, "train", i, ANNOTATION_DRAWS))
        sample = {"id": f"stage2_{spec.name}", "video": spec.name, "duration": float(spec.duration)}
        samples.append(dict(sample, conversations=qa_conversation(pairs, True)))
    for i in range(max(1, len(images) // 10)):
        pairs = text_qa(rng_for(config.seed, "text", i, ANNOTATION_DRAWS))
        samples.append({"id": f"stage2_text_{i:05d}", "conversations": qa_conversation(pairs, False)})
    return [dict(sample, source=SOURCE, task="qa") for sample in samples]


def _split_items(config: SyntheticConfig, specs: list[VideoSpec], split: str):
    # Stage 3 uses a purpose id distinct from stage 2's so the two draw independent questions.
    for i, spec in enumerate(specs):
        rng = rng_for(config.seed, split, i, ANNOTATION_DRAWS + 1)
        yield from ((spec, item) for item in task_items(spec, rng, config.tasks))


def build_stage3(config: SyntheticConfig, train: list[VideoSpec]) -> list[dict]:
    pairs = _split_items(config, train, "train")
    return [stage3_sample(spec, item, f"stage3_{item.task}_{n:06d}") for n, (spec, item) in enumerate(pairs)]


def build_test_split(config: SyntheticConfig, test: list[VideoSpec]) -> dict[str, list[dict]]:
    """The E.T.-Bench-style test samples of each E.T. Bench task of ``config``."""
    per_task = {task: [] for task in etbench_tasks(config)}
    for spec, item in _split_items(config, test, "test"):
        if item.task in per_task:
            per_task[item.task].append(bench_sample(spec, item, len(per_task[item.task])))
    return per_task


def build_qvhighlights_split(config: SyntheticConfig, test: list[VideoSpec]) -> list[dict]:
    """One QVHighlights query per test video (its own random stream, apart from the E.T. Bench questions')."""
    return [qvhighlights_line(spec, rng_for(config.seed, "test", i, ANNOTATION_DRAWS + 2), i) for i, spec in
            enumerate(test)]  # fmt: skip


def etbench_tasks(config: SyntheticConfig) -> list[str]:
    return [task for task in config.tasks if task in ETBENCH_TASKS]


def bench_annotation_path(task: str) -> str:
    return f"annotations/vid/etbench_{task}_{SOURCE}.json"


def _expected_files(config: SyntheticConfig) -> list[str]:
    names = [
        f"videos/{split}/{split}_{i:05d}.mp4"
        for split, n in (("train", config.num_train_videos), ("test", config.num_test_videos))
        for i in range(n)
    ]
    names += [f"images/image_{i:05d}.png" for i in range(config.num_images)]
    names += ["stage1.json", "stage2.json", "stage3.json"] + [bench_annotation_path(t) for t in etbench_tasks(config)]
    return names + [QVHIGHLIGHTS_ANNOTATION, DVC_ANNOTATION]


def _config_dict(config: SyntheticConfig) -> dict:
    return dict(asdict(config), tasks=list(config.tasks))


def _reusable_manifest(out_dir: str, config: SyntheticConfig) -> dict | None:
    path = os.path.join(out_dir, "manifest.json")
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("version") != MANIFEST_VERSION or manifest.get("config") != _config_dict(config):
        return None
    missing = [name for name in _expected_files(config) if not os.path.isfile(os.path.join(out_dir, name))]
    if missing:
        logger.info("%s: %d files missing (e.g. %s), regenerating", out_dir, len(missing), missing[0])
        return None
    return manifest


def _remove_stale_files(out_dir: str, config: SyntheticConfig) -> None:
    """Delete generator-named files a previous, differently sized run left behind."""
    expected = set(_expected_files(config))
    for folder, prefix, ext in (
        ("videos/train", "train_", ".mp4"),
        ("videos/test", "test_", ".mp4"),
        ("images", "image_", ".png"),
        ("annotations/vid", "etbench_", ".json"),
    ):
        path = os.path.join(out_dir, folder)
        for name in os.listdir(path):
            rel = f"{folder}/{name}"
            if name.startswith(prefix) and (name.endswith(ext) or name.endswith(".part")) and rel not in expected:
                os.remove(os.path.join(path, name))


def generate(out_dir: str, config: SyntheticConfig | None = None, workers: int | None = None, overwrite: bool = False):
    """Generate (or reuse) the synthetic data set of `config` (default: `SyntheticConfig()`) in `out_dir`; return its
    manifest."""
    config = config or SyntheticConfig()
    config.validate()
    if not overwrite and (manifest := _reusable_manifest(out_dir, config)) is not None:
        logger.info("%s already holds this data set (seed %d), reusing it", out_dir, config.seed)
        return manifest

    train, test, images = video_specs(config, "train"), video_specs(config, "test"), image_specs(config)
    check_disjoint_splits(train, test)
    for folder in ("videos/train", "videos/test", "images", "annotations/vid"):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    manifest_path = os.path.join(out_dir, "manifest.json")
    if os.path.exists(manifest_path):
        os.remove(manifest_path)  # the data set is incomplete until the new manifest is written
    _remove_stale_files(out_dir, config)

    workers = min(os.cpu_count() or 1, 8) if workers is None else workers
    codec = pick_codec()
    video_jobs = [(spec, os.path.join(out_dir, spec.name), config.fps, codec) for spec in train + test]
    video_bytes = run_jobs(encode_video_job, video_jobs, workers, "videos")
    image_bytes = run_jobs(image_job, [(s, os.path.join(out_dir, s.name)) for s in images], workers, "images")

    stage_files = {
        "stage1.json": build_stage1(train, images),
        "stage2.json": build_stage2(config, train, images),
        "stage3.json": build_stage3(config, train),
    }
    test_split = build_test_split(config, test)
    for name, samples in stage_files.items():
        write_json_atomic(os.path.join(out_dir, name), samples)
    for task, samples in test_split.items():
        write_json_atomic(os.path.join(out_dir, bench_annotation_path(task)), samples)
    qvhighlights = build_qvhighlights_split(config, test)
    write_jsonl_atomic(os.path.join(out_dir, QVHIGHLIGHTS_ANNOTATION), qvhighlights)
    write_json_atomic(os.path.join(out_dir, DVC_ANNOTATION), dense_caption_references(test))

    stage3_counts = {task: 0 for task in config.tasks}
    for sample in stage_files["stage3.json"]:
        stage3_counts[sample["task"]] += 1
    manifest = {
        "version": MANIFEST_VERSION,
        "config": _config_dict(config),
        "codec": codec,
        "paths_relative_to": "the output folder (use it as video, image and data folder)",
        "counts": {
            "train_videos": len(train),
            "test_videos": len(test),
            "images": len(images),
            "stage1": len(stage_files["stage1.json"]),
            "stage2": len(stage_files["stage2.json"]),
            "stage3": stage3_counts,
            "test": {task: len(samples) for task, samples in test_split.items()},
            "qvhighlights_queries": len(qvhighlights),
            "dense_caption_videos": len(test),
        },
        "seconds": {"train": sum(s.duration for s in train), "test": sum(s.duration for s in test)},
        "bytes": {
            "train_videos": sum(video_bytes[: len(train)]),
            "test_videos": sum(video_bytes[len(train) :]),
            "images": sum(image_bytes),
        },
        "files": {
            "stage1": "stage1.json",
            "stage2": "stage2.json",
            "stage3": "stage3.json",
            "test": [bench_annotation_path(task) for task in etbench_tasks(config)],
            "qvhighlights": QVHIGHLIGHTS_ANNOTATION,
            "dvc": DVC_ANNOTATION,
        },
    }
    write_json_atomic(manifest_path, manifest)
    logger.info("wrote %s: %s", out_dir, manifest["counts"])
    return manifest


def corpus_texts(out_dir: str) -> list[str]:
    """Every text of the data set in `out_dir` (conversations, test prompts, options, captions), for a tokenizer."""
    with open(os.path.join(out_dir, "manifest.json")) as f:
        files = json.load(f)["files"]
    texts = []
    for key in ("stage1", "stage2", "stage3"):
        with open(os.path.join(out_dir, files[key])) as f:
            texts += [turn["value"] for sample in json.load(f) for turn in sample["conversations"]]
    for name in files["test"]:
        with open(os.path.join(out_dir, name)) as f:
            for sample in json.load(f):
                texts += [sample["q"], *sample.get("o", []), *sample.get("g", [])]
    return texts
