"""The supervised training set: LLaVA-style annotation files -> token ids, labels and frames (docs/design.md §6).

An annotation file is a JSON list of samples with ``conversations`` (alternating ``from: human|gpt``, ``value``),
an optional ``image`` or ``video`` path (relative to ``image_folder`` / ``video_folder``) and optional ``duration``,
``src``, ``tgt`` (seconds), ``source``, ``task``. The three published files (llava_558k_with_webvid.json,
llava_v1_5_mix665k_with_video_chatgpt.json, et_instruct_164k_vid.json) use this layout.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

from torch.utils.data import Dataset

from etchat.constants import MATCH_TOKEN
from etchat.data.conversation import check_conversation, preprocess
from etchat.data.sample_checks import (
    Problem,
    RepeatedIds,
    SampleError,
    count_match_tokens,
    duration_problem,
    match_token_error,
    report_problems,
    time_problem,
    times_are_text,
)

logger = logging.getLogger(__name__)

MODALITIES = ("image", "video", "text")


@dataclass
class DataArguments:
    """Data options; names follow the original training CLI where it has them (None or a negative bound = off)."""

    annotation_path: list[str] = field(default_factory=list, metadata={"help": "annotation JSON file(s)"})
    image_folder: str | None = field(default=None, metadata={"help": "root of the `image` paths"})
    video_folder: str | None = field(default=None, metadata={"help": "root of the `video` paths"})
    video_decode_threads: int = field(default=1, metadata={"help": "decoder threads per video"})
    video_cache_size: int = field(default=0, metadata={"help": "decoded videos kept in memory (LRU), 0 = off"})
    fps: float = field(default=1.0, metadata={"help": "frames sampled per second of video"})
    min_video_len: float | None = field(default=None, metadata={"help": "drop/reject videos shorter than this (s)"})
    max_video_len: float | None = field(default=None, metadata={"help": "drop/reject videos longer than this (s)"})
    min_num_words: int | None = field(default=None, metadata={"help": "drop samples whose first answer is shorter"})
    max_num_words: int | None = field(default=None, metadata={"help": "drop samples whose first answer is longer"})
    max_retries: int = field(default=10, metadata={"help": "other random samples tried when one fails to load"})
    tasks: list[str] | None = field(default=None, metadata={"help": "keep only samples whose `task` is one of these"})
    image_pad_to_square: bool = field(default=False, metadata={"help": "pad images to a square with the mean colour"})
    vision_processor: str = field(default="clip_center_224", metadata={"help": "frame transform name"})
    conv_type: str = field(default="phi3", metadata={"help": "conversation template"})
    gather_conv_query: bool = field(
        default=False,
        metadata={"help": "show the video once (first user turn) with all user turns joined as its instruction"},
    )
    use_time_tag: bool = field(default=False, metadata={"help": "write src times as text and pass frame tags"})
    use_matching: bool = field(default=False, metadata={"help": "train the <vid> matching heads"})
    model_max_length: int = field(default=2048, metadata={"help": "batches are truncated to this many tokens"})
    strict: bool = field(default=False, metadata={"help": "refuse the files when a sample cannot be used"})


def _enabled(bound) -> bool:
    return bound is not None and bound >= 0


def modality_of(sample: dict) -> str:
    return "image" if "image" in sample else "video" if "video" in sample else "text"


def _count_words(sample: dict) -> int:
    # Split on single spaces as the original filter does, so the same samples are kept.
    return len(sample["conversations"][1]["value"].split(" "))


def keep_sample(sample: dict, args: DataArguments) -> bool:
    """Whether ``sample`` passes the task, first-answer word count and duration filters."""
    if args.tasks and sample.get("task") not in args.tasks:
        return False
    if _enabled(args.min_num_words) or _enabled(args.max_num_words):
        num_words = _count_words(sample) if len(sample["conversations"]) > 1 else 0
        if _enabled(args.min_num_words) and num_words < args.min_num_words:
            return False
        if _enabled(args.max_num_words) and num_words > args.max_num_words:
            return False
    duration = sample.get("duration")
    if duration is not None:
        if _enabled(args.min_video_len) and duration < args.min_video_len:
            return False
        if _enabled(args.max_video_len) and duration > args.max_video_len:
            return False
    return True


def check_sample(sample: dict, name: str, gather_conv_query: bool = False, times_as_text: bool = False) -> None:
    """Raise a ValueError naming the sample when its fields are inconsistent. ``times_as_text``: the sample's file
    writes timestamps as text, so its src / tgt are metadata (docs/design.md §15)."""
    if not isinstance(sample, dict):
        raise ValueError(f"{name} must be a JSON object, got {type(sample).__name__}")
    if "image" in sample and "video" in sample:
        raise ValueError(f"{name} has both an 'image' and a 'video'")
    check_conversation(sample.get("conversations"), modality_of(sample) != "text", name, gather_conv_query)
    num_times = len(sample.get("src") or []) + len(sample.get("tgt") or [])
    error = match_token_error(match_token_count(sample), num_times, times_as_text, "len(src) + len(tgt)")
    if error:
        raise SampleError("match_tokens", f"{name} {error}")


def match_token_count(sample) -> int:
    """``<vid>`` tokens in a sample's conversation (0 for a sample too malformed to hold any)."""
    conversations = sample.get("conversations") if isinstance(sample, dict) else None
    if not isinstance(conversations, list):
        return 0
    return count_match_tokens(
        m["value"] for m in conversations if isinstance(m, dict) and isinstance(m.get("value"), str)
    )


def sample_problem(sample, name: str, args: DataArguments, times_as_text: bool) -> Problem | None:
    """Why a sample that the filters keep cannot be trained on (malformed, <vid> counts, times, missing media), or
    None."""
    try:
        check_sample(sample, name, args.gather_conv_query, times_as_text)
    except SampleError as error:
        return Problem(error.kind, str(error))
    except ValueError as error:
        return Problem("malformed", str(error))
    times = times_problem(sample, times_as_text)
    if times:
        return Problem("times", f"{name}: {times}")
    if not keep_sample(sample, args):
        return None
    path = media_file(sample, args)
    if path is not None and not os.path.isfile(path):
        return Problem("missing_media", f"{name}: no file {path}")
    return None


def times_problem(sample: dict, times_as_text: bool) -> str | None:
    """Why a sample's duration or ``<vid>`` times cannot be trained on (docs/design.md §15), or None. Times written
    as text are metadata the model never sees, so only the duration (the filters read it) is checked then."""
    problem = duration_problem(sample)
    if problem or times_as_text or not match_token_count(sample):
        return problem
    texts = [m["value"] for m in sample["conversations"]]
    return time_problem(sample, texts=texts)


def media_file(sample: dict, args: DataArguments) -> str | None:
    if "image" in sample:
        return os.path.join(args.image_folder or "", sample["image"])
    if "video" in sample:
        return os.path.join(args.video_folder or "", sample["video"])
    return None


def write_times(text: str, times: list[float]) -> str:
    """Replace the i-th ``<vid>`` of ``text`` by ``{times[i]}s`` (times rounded to 0.1 s)."""
    pieces = text.split(MATCH_TOKEN)
    if len(pieces) - 1 != len(times):
        raise ValueError(f"{len(pieces) - 1} {MATCH_TOKEN} tokens but {len(times)} times in {text!r}")
    out = [pieces[0]]
    for time, piece in zip(times, pieces[1:]):
        out.append(f"{round(time, 1)}s{piece}")
    return "".join(out)


def _sample_name(sample: dict, position: int, path: str) -> str:
    sample_id = sample.get("id", "-") if isinstance(sample, dict) else "-"
    return f"sample {position} (id {sample_id}) of {path}"


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) <= 0


def _log_summary(samples: list[dict], num_raw: int) -> None:
    ratio = 100 * len(samples) / max(num_raw, 1)
    lines = [f"Training samples: {num_raw} -> {len(samples)} after filtering ({ratio:.2f}%)"]
    for key in ("source", "task"):
        if key == "task" and not any("task" in sample for sample in samples):
            continue
        counts = Counter(sample.get(key) or modality_of(sample) for sample in samples)
        lines.append(f"{'per ' + key:<12}{'#samples':>10}{'ratio':>8}")
        for value, count in counts.most_common():
            lines.append(f"  {value:<30}{count:>10}{count / max(len(samples), 1):>8.3f}")
    logger.info("\n".join(lines))


class SupervisedDataset(Dataset):
    """Samples of one or more annotation files, filtered at start.

    ``__getitem__`` returns ``input_ids``, ``labels``, ``image`` (float T x 3 x 224 x 224, None for text-only),
    ``query`` (Q-Former instruction per placeholder: a str for one, a list for a multi-turn video/image sample; ""
    for text-only), ``src``, ``tgt``, ``tag`` (frame times, videos with ``use_time_tag`` only),
    ``modality`` and ``length`` (token count). A sample that fails to load is replaced by another random one.
    """

    def __init__(self, annotation_paths: str | list[str] | None, tokenizer, data_args: DataArguments):
        if annotation_paths is None:
            annotation_paths = data_args.annotation_path
        if isinstance(annotation_paths, (str, os.PathLike)):
            annotation_paths = [annotation_paths]
        if not annotation_paths:
            raise ValueError("No annotation file given")

        samples, origins, problems, num_raw = [], [], [], 0
        repeated = RepeatedIds()
        for file_idx, path in enumerate(annotation_paths):
            with open(path) as f:
                raw = json.load(f)
            if not isinstance(raw, list):
                raise ValueError(f"{path} must hold a JSON list of samples, got {type(raw).__name__}")
            num_raw += len(raw)
            times_as_text = times_are_text(match_token_count(sample) for sample in raw)
            for i, sample in enumerate(raw):
                name = _sample_name(sample, i, path)
                problem = sample_problem(sample, name, data_args, times_as_text)
                if problem is None and keep_sample(sample, data_args):
                    problem = repeated.check(sample, name)
                    if problem is not None and not problem.loses_sample:
                        problems.append(problem)  # a warning: the sample is kept
                        problem = None
                if problem is not None:
                    problems.append(problem)
                elif keep_sample(sample, data_args):
                    samples.append(sample)
                    origins.append((file_idx, i))
        if data_args.strict or _is_main_process():
            report_problems(problems, num_raw, "training samples", data_args.strict)
        if not samples:
            raise ValueError(f"No sample of {annotation_paths} is left after filtering")
        if _is_main_process():
            _log_summary(samples, num_raw)

        from etchat.data.transforms import build_transform

        self.samples = samples
        self.annotation_paths = [str(path) for path in annotation_paths]
        self.origins = origins  # (file index, position in file) of each kept sample, for messages
        self.tokenizer = tokenizer
        self.args = data_args
        self.transform = build_transform(data_args.vision_processor, inference=False)
        # Per process: each data-loader worker holds its own copy of the dataset, so its own cache.
        self.video_cache: OrderedDict[str, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def modalities(self) -> list[str]:
        """'image', 'video' or 'text' per sample, for modality-grouped batching."""
        return [modality_of(sample) for sample in self.samples]

    @property
    def lengths(self) -> list[int]:
        """Word count of each whole conversation: a cheap length estimate for grouping, as in the original."""
        return [sum(m["value"].count(" ") + 1 for m in sample["conversations"]) for sample in self.samples]

    def sample_name(self, idx: int) -> str:
        file_idx, position = self.origins[idx]
        return _sample_name(self.samples[idx], position, self.annotation_paths[file_idx])

    def media_path(self, idx: int) -> str | None:
        return media_file(self.samples[idx], self.args)

    def __getitem__(self, idx: int) -> dict:
        last_error = None
        for _ in range(self.args.max_retries + 1):
            try:
                return self.load(idx)
            except Exception as e:  # noqa: BLE001 - one broken sample must not stop a training run
                last_error = e
                logger.warning(
                    "Cannot load %s (file: %s): %s: %s; using another random sample",
                    self.sample_name(idx),
                    self.media_path(idx),
                    type(e).__name__,
                    e,
                )
                idx = random.randrange(len(self))
        raise RuntimeError(
            f"Data loading failed {self.args.max_retries + 1} times in a row (max_retries={self.args.max_retries}), "
            f"last error: {last_error}"
        ) from last_error

    def load_video_frames(self, path: str):
        """Transformed frames and time tags of `path`, from the cache when it holds them.

        The cache keeps a deterministic transform's output, so a cached video costs nothing; with a random crop it
        keeps the decoded frames and each sample crops them anew.
        """
        from etchat.data.video import load_video

        random_crop = getattr(self.transform, "random_crop", True)
        entry = self.video_cache.get(path)
        if entry is not None:
            self.video_cache.move_to_end(path)
        else:
            args = self.args
            clip = load_video(
                path,
                fps=args.fps,
                min_len=args.min_video_len,
                max_len=args.max_video_len,
                num_threads=args.video_decode_threads,
                short_side=self.transform.size,
            )
            entry = (clip.frames if random_crop else self.transform(clip.frames), clip.tags)
            if args.video_cache_size > 0:
                self.video_cache[path] = entry
                if len(self.video_cache) > args.video_cache_size:
                    self.video_cache.popitem(last=False)
        frames, tags = entry
        return (self.transform(frames) if random_crop else frames), tags

    def load(self, idx: int) -> dict:
        """Sample ``idx`` without retries."""
        from etchat.data.video import load_image

        sample, args = self.samples[idx], self.args
        conversations = [dict(message) for message in sample["conversations"]]
        src, tgt = sample.get("src"), sample.get("tgt")
        if not match_token_count(sample):  # timestamps written as text: src / tgt are metadata
            src = tgt = None
        if args.use_time_tag and src is not None:
            # The source times become text in the question instead of <vid> tokens.
            conversations[0]["value"] = write_times(conversations[0]["value"], src)
            src = None

        modality, frames, tag = modality_of(sample), None, None
        if modality == "image":
            frames = self.transform(load_image(self.media_path(idx), pad_to_square=args.image_pad_to_square))
        elif modality == "video":
            frames, tags = self.load_video_frames(self.media_path(idx))
            tag = tags if args.use_time_tag else None

        data = preprocess(
            conversations,
            self.tokenizer,
            args.conv_type,
            modality != "text",
            name=self.sample_name(idx),
            gather_conv_query=args.gather_conv_query,
        )
        data.update(
            image=frames,
            src=list(src) if src is not None else None,
            tgt=list(tgt) if tgt is not None else None,
            tag=tag,
            modality=modality,
            length=int(data["input_ids"].numel()),
            name=self.sample_name(idx),
        )
        return data
