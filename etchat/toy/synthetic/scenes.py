"""Scene descriptions of the synthetic videos and images, drawn from seeded generators."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


# A named shape grows from this fraction of its size to all of it while on screen, so a single frame shows how far
# into its span it is: without that cue the start and the end of a span look alike frame by frame, and a toy model
# learns where a span's edges are long before it learns which edge is which.
GROWTH_START = 0.5

# RNG stream ids: every video/image gets its own generator seeded by (seed, stream, index), so the splits never
# share a random stream and one item does not depend on how many others are generated.
STREAM_IDS = {"train": 0, "test": 1, "image": 2, "text": 3}
SPEC_DRAWS, ANNOTATION_DRAWS = 0, 1


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


def rng_for(seed: int, stream: str, index: int, purpose: int) -> np.random.Generator:
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
