"""A seeded generator of a small time-sensitive video data set, for running E.T. Chat end to end on a CPU.

Each video shows large, saturated coloured shapes (5 colours x 4 shapes) on a plain gray background, each placed in
its own cell of a 2x2 grid. A shape appears at an integer second ``start``, slides in one direction across its cell
and disappears after the integer second ``end``: it is visible on every frame whose time ``t`` satisfies
``start <= t <= end``, so at 1 fps it is on frames ``start .. end``. The colours within one video are distinct, so
"the red circle" names one contiguous span. Small white/gray shapes wander over the whole frame as distractors; they
are achromatic and never named.

Output layout (all annotation paths are relative to ``<out>``; consumers pass ``<out>`` as the image, video and
data folder)::

    <out>/videos/train/train_00000.mp4 ...   training videos (never used by the test split)
    <out>/videos/test/test_00000.mp4 ...     test videos
    <out>/images/image_00000.png ...         still images for stages 1-2
    <out>/stage1.json                        captions (template `plain`: human "<image>", gpt the caption)
    <out>/stage2.json                        QA conversations (phi3 template), a few text-only samples
    <out>/stage3.json                        ET-Instruct style samples with <vid> tokens and src/tgt seconds
    <out>/annotations/vid/etbench_<task>_synthetic.json   E.T. Bench style test split, one file per task
    <out>/manifest.json                      config, counts and sizes; written last

Videos are 224x224 at 3 fps and last an integer number of seconds (20-90 by default), so at 1 fps frame index and
second coincide. All times in the annotations are integer seconds.

Usage: ``python -m etchat.data.synthetic --out data/synthetic --seed 0``. Rerunning with the same arguments reuses
the existing files; ``--overwrite`` forces regeneration.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import string
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass

import av
import numpy as np
from PIL import Image
from tqdm import tqdm

logger = logging.getLogger(__name__)

MANIFEST_VERSION = 1
SOURCE = "synthetic"

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 190, 40),
    "blue": (40, 70, 230),
    "yellow": (235, 215, 30),
    "purple": (170, 40, 200),
}
SHAPES = ("circle", "square", "triangle", "diamond")
CORNERS = {"circle": "no", "square": "four", "triangle": "three", "diamond": "four"}
CELLS = ("top left", "top right", "bottom left", "bottom right")  # 2x2 grid, row-major
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
DIRECTION_WORDS = {"left": "to the left", "right": "to the right", "up": "up", "down": "down"}
DISTRACTOR_GRAYS = (235, 165)  # achromatic, so they never match a named colour
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
OPTION_LETTERS = string.ascii_uppercase

TASKS = ("tvg", "vhd", "tal", "dvc", "rar", "rvq", "eca")
MULTIPLE_CHOICE_TASKS = ("rar", "rvq", "eca")

# A named shape grows from this fraction of its size to all of it while on screen, so a single frame shows how far
# into its span it is: without that cue the start and the end of a span look alike frame by frame, and a toy model
# learns where a span's edges are long before it learns which edge is which.
GROWTH_START = 0.5

# RNG stream ids: every video/image gets its own generator seeded by (seed, stream, index), so the splits never
# share a random stream and one item does not depend on how many others are generated.
STREAM_IDS = {"train": 0, "test": 1, "image": 2, "text": 3}
SPEC_DRAWS, ANNOTATION_DRAWS = 0, 1


# ----------------------------------------------------------------------------------------------------------------
# Scene descriptions


@dataclass(frozen=True)
class Event:
    """A named coloured shape, visible from second ``start`` to second ``end`` (both included)."""

    colour: str
    shape: str
    cell: int
    direction: str
    diameter: int
    start: int
    end: int
    from_xy: tuple[int, int]  # top-left corner at `start`
    to_xy: tuple[int, int]  # top-left corner at `end`

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"

    @property
    def caption(self) -> str:
        return f"a {self.name} moves {DIRECTION_WORDS[self.direction]}"

    def is_visible(self, t: float) -> bool:
        return self.start <= t <= self.end

    def progress(self, t: float) -> float:
        return (t - self.start) / (self.end - self.start)

    def position(self, t: float) -> tuple[int, int]:
        """Top-left corner of the full-size shape's box (it slides from `from_xy` to `to_xy`)."""
        progress = self.progress(t)
        x = self.from_xy[0] + progress * (self.to_xy[0] - self.from_xy[0])
        y = self.from_xy[1] + progress * (self.to_xy[1] - self.from_xy[1])
        return round(x), round(y)

    def size_at(self, t: float) -> int:
        """Drawn size at `t`: the shape grows linearly from GROWTH_START of its diameter to all of it."""
        return max(3, round(self.diameter * (GROWTH_START + (1 - GROWTH_START) * self.progress(t))))

    def box(self, t: float) -> tuple[tuple[int, int], int]:
        """(top-left corner, size) of the shape drawn at `t`, centred in its full-size box."""
        x, y = self.position(t)
        size = self.size_at(t)
        offset = (self.diameter - size) // 2
        return (x + offset, y + offset), size


@dataclass(frozen=True)
class Distractor:
    """A small achromatic shape bouncing around the whole frame for the whole video."""

    gray: int
    shape: str
    diameter: int
    start_xy: tuple[float, float]
    velocity: tuple[float, float]  # pixels per second

    def position(self, t: float, size: int) -> tuple[int, int]:
        limit = size - self.diameter
        return tuple(round(_bounce(p + v * t, limit)) for p, v in zip(self.start_xy, self.velocity))


@dataclass(frozen=True)
class VideoSpec:
    name: str  # path relative to the output folder
    split: str
    duration: int  # seconds
    size: int
    background: int
    events: tuple[Event, ...]
    distractors: tuple[Distractor, ...]


@dataclass(frozen=True)
class StillObject:
    colour: str
    shape: str
    cell: int
    diameter: int
    xy: tuple[int, int]

    @property
    def name(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class ImageSpec:
    name: str
    size: int
    background: int
    objects: tuple[StillObject, ...]
    distractors: tuple[Distractor, ...]


def _bounce(p: float, limit: float) -> float:
    """Fold a free 1-D trajectory into [0, limit] as if it bounced off both walls."""
    if limit <= 0:
        return 0.0
    p = p % (2 * limit)
    return 2 * limit - p if p > limit else p


def _rng(seed: int, stream: str, index: int, purpose: int) -> np.random.Generator:
    return np.random.default_rng([seed, STREAM_IDS[stream], index, purpose])


def _cell_geometry(size: int, cell: int, diameter: int) -> tuple[int, int, int, int]:
    """Range (x_lo, x_hi, y_lo, y_hi) of top-left corners that keep a shape inside its cell, with a margin."""
    half = size // 2
    margin = max(1, round(half * 0.06))
    x0, y0 = (cell % 2) * half, (cell // 2) * half
    return x0 + margin, x0 + half - margin - diameter, y0 + margin, y0 + half - margin - diameter


def _sample_diameter(rng: np.random.Generator, size: int) -> int:
    half = size // 2
    return int(rng.integers(round(half * 0.5), round(half * 0.62) + 1))


def _sample_path(rng, size, cell, diameter, direction):
    x_lo, x_hi, y_lo, y_hi = _cell_geometry(size, cell, diameter)
    dx, dy = DIRECTIONS[direction]
    x = int(rng.integers(x_lo, x_hi + 1))
    y = int(rng.integers(y_lo, y_hi + 1))
    from_xy = ({1: x_lo, -1: x_hi}.get(dx, x), {1: y_lo, -1: y_hi}.get(dy, y))
    to_xy = ({1: x_hi, -1: x_lo}.get(dx, x), {1: y_hi, -1: y_lo}.get(dy, y))
    return from_xy, to_xy


def _sample_span(rng: np.random.Generator, duration: int) -> tuple[int, int]:
    """A span [start, end] of whole seconds inside [0, duration - 1], 15-50% of the video and at least 3 s."""
    min_len = max(3, round(0.15 * duration))
    max_len = max(min_len, round(0.5 * duration))
    length = int(rng.integers(min_len, max_len + 1))
    start = int(rng.integers(0, duration - length))
    return start, start + length


def _sample_distractors(rng: np.random.Generator, size: int) -> tuple[Distractor, ...]:
    distractors = []
    for _ in range(int(rng.integers(1, 4))):
        diameter = max(3, int(rng.integers(round(size * 0.05), round(size * 0.09) + 1)))
        speed = rng.uniform(0.02, 0.06, size=2) * size * rng.choice([-1, 1], size=2)
        distractors.append(
            Distractor(
                gray=int(rng.choice(DISTRACTOR_GRAYS)),
                shape=str(rng.choice(SHAPES)),
                diameter=diameter,
                start_xy=tuple(float(v) for v in rng.uniform(0, size - diameter, size=2)),
                velocity=tuple(float(v) for v in speed),
            )
        )
    return tuple(distractors)


def _sample_background(rng: np.random.Generator) -> int:
    return int(rng.integers(25, 90))


def sample_video_spec(rng: np.random.Generator, name: str, split: str, size: int, min_len: int, max_len: int):
    """Draw one video: 2-4 events with distinct colours in distinct cells, plus 1-3 distractors."""
    duration = int(rng.integers(min_len, max_len + 1))
    num_events = int(rng.integers(2, 5))
    colours = rng.choice(list(COLOURS), size=num_events, replace=False)
    cells = rng.permutation(len(CELLS))[:num_events]
    events = []
    for colour, cell in zip(colours, cells):
        diameter = _sample_diameter(rng, size)
        direction = str(rng.choice(list(DIRECTIONS)))
        start, end = _sample_span(rng, duration)
        from_xy, to_xy = _sample_path(rng, size, int(cell), diameter, direction)
        events.append(
            Event(str(colour), str(rng.choice(SHAPES)), int(cell), direction, diameter, start, end, from_xy, to_xy)
        )
    events.sort(key=lambda e: (e.start, e.end, e.colour))
    return VideoSpec(
        name, split, duration, size, _sample_background(rng), tuple(events), _sample_distractors(rng, size)
    )


def sample_image_spec(rng: np.random.Generator, name: str, size: int) -> ImageSpec:
    """Draw one still image: 1-4 static shapes with distinct colours in distinct cells, plus distractors."""
    num_objects = int(rng.integers(1, 5))
    colours = rng.choice(list(COLOURS), size=num_objects, replace=False)
    cells = sorted(int(c) for c in rng.permutation(len(CELLS))[:num_objects])
    objects = []
    for colour, cell in zip(colours, cells):
        diameter = _sample_diameter(rng, size)
        x_lo, x_hi, y_lo, y_hi = _cell_geometry(size, cell, diameter)
        xy = (int(rng.integers(x_lo, x_hi + 1)), int(rng.integers(y_lo, y_hi + 1)))
        objects.append(StillObject(str(colour), str(rng.choice(SHAPES)), cell, diameter, xy))
    return ImageSpec(name, size, _sample_background(rng), tuple(objects), _sample_distractors(rng, size))


# ----------------------------------------------------------------------------------------------------------------
# Drawing and encoding


def shape_mask(shape: str, diameter: int) -> np.ndarray:
    """Boolean (diameter, diameter) mask of a shape filling its bounding box."""
    c = (diameter - 1) / 2
    y, x = np.mgrid[0:diameter, 0:diameter]
    if shape == "circle":
        return (x - c) ** 2 + (y - c) ** 2 <= (diameter / 2) ** 2
    if shape == "square":
        inset = round(diameter * 0.08)  # a full box looks bigger than the other shapes
        mask = np.zeros((diameter, diameter), dtype=bool)
        mask[inset : diameter - inset, inset : diameter - inset] = True
        return mask
    if shape == "triangle":  # apex up
        return np.abs(x - c) <= (y + 0.5) / diameter * (diameter / 2)
    if shape == "diamond":
        return np.abs(x - c) + np.abs(y - c) <= diameter / 2
    raise ValueError(f"unknown shape: {shape!r}")


def _paste(frame: np.ndarray, mask: np.ndarray, xy: tuple[int, int], rgb) -> None:
    x, y = xy
    d = mask.shape[0]
    frame[y : y + d, x : x + d][mask] = rgb


def render_video_frame(spec: VideoSpec, t: float, masks: dict | None = None) -> np.ndarray:
    """The RGB frame of `spec` at time `t` seconds; distractors are drawn under the named shapes."""
    masks = {} if masks is None else masks
    frame = np.full((spec.size, spec.size, 3), spec.background, dtype=np.uint8)
    for item in spec.distractors:
        mask = masks.setdefault((item.shape, item.diameter), shape_mask(item.shape, item.diameter))
        _paste(frame, mask, item.position(t, spec.size), item.gray)
    for event in spec.events:
        if event.is_visible(t):
            xy, size = event.box(t)
            mask = masks.setdefault((event.shape, size), shape_mask(event.shape, size))
            _paste(frame, mask, xy, COLOURS[event.colour])
    return frame


def render_image(spec: ImageSpec) -> np.ndarray:
    frame = np.full((spec.size, spec.size, 3), spec.background, dtype=np.uint8)
    for item in spec.distractors:
        _paste(frame, shape_mask(item.shape, item.diameter), item.position(0.0, spec.size), item.gray)
    for obj in spec.objects:
        _paste(frame, shape_mask(obj.shape, obj.diameter), obj.xy, COLOURS[obj.colour])
    return frame


def pick_codec() -> str:
    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


def encode_video(spec: VideoSpec, path: str, fps: int, codec: str) -> None:
    """Write `spec` as an mp4 of `duration * fps` frames, a keyframe every second; atomic (temp file + rename)."""
    tmp_path = path + ".part"
    masks = {}
    with av.open(tmp_path, mode="w", format="mp4") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width = stream.height = spec.size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1  # one process per core already; also keeps output deterministic
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": "18", "g": str(fps)}
        else:
            stream.options = {"g": str(fps), "qscale": "3"}
        for k in range(spec.duration * fps):
            frame = av.VideoFrame.from_ndarray(render_video_frame(spec, k / fps, masks), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())
    os.replace(tmp_path, path)


def _encode_job(job: tuple[VideoSpec, str, int, str]) -> int:
    spec, path, fps, codec = job
    encode_video(spec, path, fps, codec)
    return os.path.getsize(path)


def _image_job(job: tuple[ImageSpec, str]) -> int:
    spec, path = job
    Image.fromarray(render_image(spec)).save(path + ".part", format="PNG")
    os.replace(path + ".part", path)
    return os.path.getsize(path)


def _run_jobs(fn, jobs: list, workers: int, desc: str) -> list[int]:
    if workers <= 1 or len(jobs) <= 1:
        return [fn(job) for job in tqdm(jobs, desc=desc)]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(tqdm(pool.map(fn, jobs, chunksize=4), total=len(jobs), desc=desc))


# ----------------------------------------------------------------------------------------------------------------
# Text helpers


def _join(phrases: list[str]) -> str:
    """'a', 'a and b', 'a, b and c'."""
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _spans_text(count: int) -> str:
    """'<vid> - <vid>', '<vid> - <vid> and <vid> - <vid>', ..."""
    return _join(["<vid> - <vid>"] * count)


def _multiple_choice(rng, question: str, correct: str, wrong: list[str]) -> tuple[str, list[str], int]:
    """Shuffle `correct` among `wrong`; return the prompt listing the options, the options and the answer index."""
    options = [correct, *wrong]
    order = rng.permutation(len(options))
    options = [options[i] for i in order]
    answer = int(np.flatnonzero(order == 0)[0])
    lines = [f"({OPTION_LETTERS[i]}) {option}" for i, option in enumerate(options)]
    prompt = f"{question}\nOptions:\n" + "\n".join(lines) + "\nPlease choose the best option."
    return prompt, options, answer


def _mc_answer(options: list[str], answer: int, with_text: bool = True) -> str:
    letter = OPTION_LETTERS[answer]
    return f"Best Option: ({letter}) {options[answer]}" if with_text else f"Best Option: ({letter})"


# ----------------------------------------------------------------------------------------------------------------
# Time-sensitive tasks (stage 3 and the test split share the wording)


@dataclass
class TaskItem:
    task: str
    question: str  # every input time is a <vid>, its second in `src`
    answer: str  # every output time is a <vid>, its second in `tgt`
    src: list[int]
    tgt: list[int]
    truth: dict  # ground truth in the E.T. Bench layout of this task: tgt / p / o / g


def _tvg_items(spec: VideoSpec, rng) -> list[TaskItem]:
    items = []
    for event in spec.events:
        question = (
            f"When does the {event.name} appear in the video? The format of your response should be: "
            f"'The {event.name} appears in <start time> - <end time>'."
        )
        answer = f"The {event.name} appears in <vid> - <vid>."
        items.append(TaskItem("tvg", question, answer, [], [event.start, event.end], {"tgt": [event.start, event.end]}))
    return items


def _vhd_items(spec: VideoSpec, rng) -> list[TaskItem]:
    event = spec.events[int(rng.integers(len(spec.events)))]
    question = (
        f"Find the highlight moment of the sentence: 'the {event.name} is visible'. "
        "The format of your response should be: 'The highlight moment happens in <time>'."
    )
    middle = (event.start + event.end) // 2
    answer = "The highlight moment happens in <vid>."
    return [TaskItem("vhd", question, answer, [], [middle], {"tgt": [[[event.start, event.end]]]})]


def _tal_items(spec: VideoSpec, rng) -> list[TaskItem]:
    shapes = sorted({event.shape for event in spec.events})
    shape = shapes[int(rng.integers(len(shapes)))]
    spans = [[event.start, event.end] for event in spec.events if event.shape == shape]
    question = (
        f"Find all the moments when a {shape} is visible. The format of your response should be: "
        f"'A {shape} is visible in <start time> - <end time> and <start time> - <end time>'."
    )
    answer = f"A {shape} is visible in {_spans_text(len(spans))}."
    return [TaskItem("tal", question, answer, [], [t for span in spans for t in span], {"tgt": spans})]


def _dvc_items(spec: VideoSpec, rng) -> list[TaskItem]:
    question = (
        "Localize every coloured shape in the video and describe what it does. The format of your response "
        "should be: '<start time> - <end time>, <description>. <start time> - <end time>, <description>.'"
    )
    answer = " ".join(f"<vid> - <vid>, {event.caption}." for event in spec.events)
    tgt = [t for event in spec.events for t in (event.start, event.end)]
    truth = {"tgt": [[e.start, e.end] for e in spec.events], "g": [e.caption for e in spec.events]}
    return [TaskItem("dvc", question, answer, [], tgt, truth)]


def _other_names(rng, exclude: set[str], count: int) -> list[str]:
    """`count` distinct colour-shape names not in `exclude`, drawn at random."""
    names = [f"{c} {s}" for c in COLOURS for s in SHAPES if f"{c} {s}" not in exclude]
    return [names[i] for i in rng.choice(len(names), size=count, replace=False)]


def _rar_items(spec: VideoSpec, rng) -> list[TaskItem]:
    event = spec.events[int(rng.integers(len(spec.events)))]
    t = int(rng.integers(event.start, event.end + 1))
    visible = {e.name for e in spec.events if e.is_visible(t)}
    absent = [e.name for e in spec.events if not e.is_visible(t)]  # shown elsewhere in the video: hard negatives
    wrong = absent[:3] + _other_names(rng, visible | set(absent), 3 - len(absent[:3]))
    question = "Which shape is visible at <vid>?"
    prompt, options, answer = _multiple_choice(rng, question, f"the {event.name}", [f"the {n}" for n in wrong])
    return [TaskItem("rar", prompt, _mc_answer(options, answer), [t], [], {"o": options, "p": answer})]


def _rvq_items(spec: VideoSpec, rng) -> list[TaskItem]:
    """'What colour is the <shape> visible at <vid>?', asked where that shape is unique on screen."""
    for index in rng.permutation(len(spec.events)):
        event = spec.events[int(index)]
        same_shape = [e for e in spec.events if e.shape == event.shape and e is not event]
        times = [t for t in range(event.start, event.end + 1) if not any(e.is_visible(t) for e in same_shape)]
        if not times:
            continue
        t = times[int(rng.integers(len(times)))]
        decoys = [e.colour for e in same_shape]  # same shape elsewhere in time: answering needs the time
        others = [c for c in COLOURS if c != event.colour and c not in decoys]
        wrong = (decoys + [others[i] for i in rng.permutation(len(others))])[:3]
        question = f"What colour is the {event.shape} visible at <vid>?"
        prompt, options, answer = _multiple_choice(rng, question, event.colour, wrong)
        return [TaskItem("rvq", prompt, _mc_answer(options, answer), [t], [], {"o": options, "p": answer})]
    return []


def _decoy_span(rng, duration: int, length: int, taken: list[tuple[int, int]]) -> tuple[int, int]:
    """A span of `length` seconds overlapping each span in `taken` by at most a third of the shorter one."""
    for _ in range(100):
        start = int(rng.integers(0, max(1, duration - length)))
        span = (start, min(duration - 1, start + length))
        if all(min(span[1], b) - max(span[0], a) <= min(span[1] - span[0], b - a) / 3 for a, b in taken):
            return span
    return span  # crowded short video: accept some overlap rather than loop forever


def _eca_items(spec: VideoSpec, rng) -> list[TaskItem]:
    """Pick the segment that shows a named shape, among four segments given as <vid> - <vid>."""
    event = spec.events[int(rng.integers(len(spec.events)))]
    correct = (event.start, event.end)
    taken = [correct]
    for _ in range(3):
        taken.append(_decoy_span(rng, spec.duration, event.end - event.start, taken))
    order = rng.permutation(4)
    spans = [taken[i] for i in order]
    answer = int(np.flatnonzero(order == 0)[0])
    options = ["<vid> - <vid>"] * 4
    lines = [f"({OPTION_LETTERS[i]}) {option}" for i, option in enumerate(options)]
    question = (
        f"Which segment shows the {event.name}?\nOptions:\n" + "\n".join(lines) + "\nPlease choose the best option."
    )
    src = [t for span in spans for t in span]
    return [TaskItem("eca", question, _mc_answer(options, answer, False), src, [], {"o": options, "p": answer})]


TASK_BUILDERS = {
    "tvg": _tvg_items,
    "vhd": _vhd_items,
    "tal": _tal_items,
    "dvc": _dvc_items,
    "rar": _rar_items,
    "rvq": _rvq_items,
    "eca": _eca_items,
}


def task_items(spec: VideoSpec, rng, tasks) -> list[TaskItem]:
    items = [item for task in tasks for item in TASK_BUILDERS[task](spec, rng)]
    for item in items:
        num_vid = item.question.count("<vid>") + item.answer.count("<vid>")
        assert num_vid == len(item.src) + len(item.tgt), f"{spec.name} {item.task}: <vid> count != len(src)+len(tgt)"
    return items


def stage3_sample(spec: VideoSpec, item: TaskItem, sample_id: str) -> dict:
    sample = {"id": sample_id, "video": spec.name, "duration": float(spec.duration)}
    sample["conversations"] = [
        {"from": "human", "value": "<image>\n" + item.question},
        {"from": "gpt", "value": item.answer},
    ]
    if item.src:
        sample["src"] = item.src
    if item.tgt:
        sample["tgt"] = item.tgt
    sample.update(source=SOURCE, task=item.task)
    return sample


def bench_sample(spec: VideoSpec, item: TaskItem, idx: int) -> dict:
    sample = {"version": 1.0, "idx": idx, "task": item.task, "source": SOURCE, "video": spec.name}
    sample.update(duration=float(spec.duration), q=item.question)
    if item.src:
        sample["src"] = item.src
    sample.update(item.truth)
    return sample


# ----------------------------------------------------------------------------------------------------------------
# Captions and QA (stages 1 and 2)


def image_caption(spec: ImageSpec) -> str:
    return _join([f"a {obj.name} in the {CELLS[obj.cell]}" for obj in spec.objects]) + "."


def video_caption(spec: VideoSpec) -> str:
    return ", then ".join(f"a {event.name} appears" for event in spec.events) + "."


def _image_qa(spec: ImageSpec, rng) -> list[tuple[str, str]]:
    obj = spec.objects[int(rng.integers(len(spec.objects)))]
    count = len(spec.objects)
    noun = "shape" if count == 1 else "shapes"
    pairs = [
        (
            "How many coloured shapes are in the image?",
            f"There {'is' if count == 1 else 'are'} {NUMBER_WORDS[count]} coloured {noun}.",
        ),
        (f"Where is the {obj.name}?", f"The {obj.name} is in the {CELLS[obj.cell]}."),
        (f"What colour is the shape in the {CELLS[obj.cell]}?", f"It is {obj.colour}."),
        (f"What shape is the {obj.colour} object?", f"It is a {obj.shape}."),
    ]
    return [pairs[i] for i in rng.permutation(len(pairs))[: int(rng.integers(1, 4))]]


def _video_qa(spec: VideoSpec, rng) -> list[tuple[str, str]]:
    event = spec.events[int(rng.integers(len(spec.events)))]
    count = len(spec.events)
    pairs = [
        (
            "How many coloured shapes appear in the video?",
            f"{NUMBER_WORDS[count].capitalize()} coloured shapes appear.",
        ),
        ("Which shape appears first?", f"The {spec.events[0].name} appears first."),
        (f"Which way does the {event.name} move?", f"It moves {DIRECTION_WORDS[event.direction]}."),
        (f"Where is the {event.name}?", f"The {event.name} is in the {CELLS[event.cell]}."),
        ("Which shapes appear in the video?", _join([f"a {e.name}" for e in spec.events]).capitalize() + "."),
    ]
    return [pairs[i] for i in rng.permutation(len(pairs))[: int(rng.integers(1, 4))]]


def _text_qa(rng) -> list[tuple[str, str]]:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    pairs = [
        (f"How many corners does a {shape} have?", f"A {shape} has {CORNERS[shape]} corners."),
        (f"Is {colour} a colour or a shape?", f"{colour.capitalize()} is a colour."),
        (f"Is a {shape} a colour or a shape?", f"A {shape} is a shape."),
    ]
    return [pairs[i] for i in rng.permutation(len(pairs))[: int(rng.integers(1, 3))]]


def _conversation(pairs: list[tuple[str, str]], with_media: bool) -> list[dict]:
    turns = []
    for i, (question, answer) in enumerate(pairs):
        prefix = "<image>\n" if with_media and i == 0 else ""
        turns += [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}]
    return turns


def _plain(caption: str) -> list[dict]:
    return [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption}]


# ----------------------------------------------------------------------------------------------------------------
# The whole data set


@dataclass(frozen=True)
class SyntheticConfig:
    seed: int = 0
    num_train_videos: int = 300
    num_test_videos: int = 60
    num_images: int = 200
    fps: int = 3
    size: int = 224
    min_len: int = 20
    max_len: int = 90
    tasks: tuple[str, ...] = TASKS

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
            _rng(config.seed, split, i, SPEC_DRAWS),
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
        sample_image_spec(_rng(config.seed, "image", i, SPEC_DRAWS), f"images/image_{i:05d}.png", config.size)
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
    samples = [{"id": f"stage1_{s.name}", "image": s.name, "conversations": _plain(image_caption(s))} for s in images]
    for spec in train:
        sample = {"id": f"stage1_{spec.name}", "video": spec.name, "duration": float(spec.duration)}
        sample["conversations"] = _plain(video_caption(spec))
        samples.append(sample)
    return [dict(sample, source=SOURCE, task="caption") for sample in samples]


def build_stage2(config: SyntheticConfig, train: list[VideoSpec], images: list[ImageSpec]) -> list[dict]:
    samples = []
    for i, spec in enumerate(images):
        pairs = _image_qa(spec, _rng(config.seed, "image", i, ANNOTATION_DRAWS))
        samples.append({"id": f"stage2_{spec.name}", "image": spec.name, "conversations": _conversation(pairs, True)})
    for i, spec in enumerate(train):
        pairs = _video_qa(spec, _rng(config.seed, "train", i, ANNOTATION_DRAWS))
        sample = {"id": f"stage2_{spec.name}", "video": spec.name, "duration": float(spec.duration)}
        samples.append(dict(sample, conversations=_conversation(pairs, True)))
    for i in range(max(1, len(images) // 10)):
        pairs = _text_qa(_rng(config.seed, "text", i, ANNOTATION_DRAWS))
        samples.append({"id": f"stage2_text_{i:05d}", "conversations": _conversation(pairs, False)})
    return [dict(sample, source=SOURCE, task="qa") for sample in samples]


def _split_items(config: SyntheticConfig, specs: list[VideoSpec], split: str):
    # Stage 3 uses a purpose id distinct from stage 2's so the two draw independent questions.
    for i, spec in enumerate(specs):
        rng = _rng(config.seed, split, i, ANNOTATION_DRAWS + 1)
        yield from ((spec, item) for item in task_items(spec, rng, config.tasks))


def build_stage3(config: SyntheticConfig, train: list[VideoSpec]) -> list[dict]:
    pairs = _split_items(config, train, "train")
    return [stage3_sample(spec, item, f"stage3_{item.task}_{n:06d}") for n, (spec, item) in enumerate(pairs)]


def build_test_split(config: SyntheticConfig, test: list[VideoSpec]) -> dict[str, list[dict]]:
    per_task = {task: [] for task in config.tasks}
    for spec, item in _split_items(config, test, "test"):
        per_task[item.task].append(bench_sample(spec, item, len(per_task[item.task])))
    return per_task


def bench_annotation_path(task: str) -> str:
    return f"annotations/vid/etbench_{task}_{SOURCE}.json"


def _expected_files(config: SyntheticConfig) -> list[str]:
    names = [
        f"videos/{split}/{split}_{i:05d}.mp4"
        for split, n in (("train", config.num_train_videos), ("test", config.num_test_videos))
        for i in range(n)
    ]
    names += [f"images/image_{i:05d}.png" for i in range(config.num_images)]
    names += ["stage1.json", "stage2.json", "stage3.json"] + [bench_annotation_path(t) for t in config.tasks]
    return names


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


def _dump_json(obj, path: str) -> None:
    with open(path + ".part", "w") as f:
        json.dump(obj, f)
    os.replace(path + ".part", path)


def generate(
    out_dir: str,
    seed: int = 0,
    num_train_videos: int = 300,
    num_test_videos: int = 60,
    num_images: int = 200,
    fps: int = 3,
    size: int = 224,
    min_len: int = 20,
    max_len: int = 90,
    tasks=TASKS,
    workers: int | None = None,
    overwrite: bool = False,
) -> dict:
    """Generate (or reuse) the synthetic data set in `out_dir`; return its manifest."""
    config = SyntheticConfig(
        seed, num_train_videos, num_test_videos, num_images, fps, size, min_len, max_len, tuple(tasks)
    )
    config.validate()
    if not overwrite and (manifest := _reusable_manifest(out_dir, config)) is not None:
        logger.info("%s already holds this data set (seed %d), reusing it", out_dir, seed)
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
    video_jobs = [(spec, os.path.join(out_dir, spec.name), fps, codec) for spec in train + test]
    video_bytes = _run_jobs(_encode_job, video_jobs, workers, "videos")
    image_bytes = _run_jobs(_image_job, [(s, os.path.join(out_dir, s.name)) for s in images], workers, "images")

    stage_files = {
        "stage1.json": build_stage1(train, images),
        "stage2.json": build_stage2(config, train, images),
        "stage3.json": build_stage3(config, train),
    }
    test_split = build_test_split(config, test)
    for name, samples in stage_files.items():
        _dump_json(samples, os.path.join(out_dir, name))
    for task, samples in test_split.items():
        _dump_json(samples, os.path.join(out_dir, bench_annotation_path(task)))

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
            "test": [bench_annotation_path(task) for task in config.tasks],
        },
    }
    _dump_json(manifest, manifest_path)
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


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--out", default="data/synthetic", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_train_videos", type=int, default=300)
    parser.add_argument("--num_test_videos", type=int, default=60)
    parser.add_argument("--num_images", type=int, default=200, help="still images for stages 1-2")
    parser.add_argument("--fps", type=int, default=3, help="frame rate of the encoded videos")
    parser.add_argument("--size", type=int, default=224, help="frame width = height in pixels (even)")
    parser.add_argument("--min_len", type=int, default=20, help="shortest video in seconds")
    parser.add_argument("--max_len", type=int, default=90, help="longest video in seconds")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated stage 3 / test tasks, from {TASKS}")
    parser.add_argument("--workers", type=int, default=None, help="encoding processes (default: number of cores)")
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if the folder already matches")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    tasks = tuple(task.strip() for task in args.tasks.split(",") if task.strip())
    generate(
        args.out,
        seed=args.seed,
        num_train_videos=args.num_train_videos,
        num_test_videos=args.num_test_videos,
        num_images=args.num_images,
        fps=args.fps,
        size=args.size,
        min_len=args.min_len,
        max_len=args.max_len,
        tasks=tasks,
        workers=args.workers,
        overwrite=args.overwrite,
    )


if __name__ == "__main__":
    main()
