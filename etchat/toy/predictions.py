"""A seeded synthetic E.T. Bench prediction file, to exercise and time ``compute_metrics`` without a model.

It holds all 20 (task, source) groups with the real sizes (7,289 samples at ``--scale 1``) and the real field layout
(``idx, task, source, video, duration, q, src, tgt, p, o, g, a``). Answers mix the styles a model produces: right
(near the ground truth), wrong, and unparsable or free-text answers, in the formats the E.T. Bench prompts ask for.

Usage: ``python -m etchat.toy.predictions --out preds.json [--scale 0.05] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

from etchat.cli import setup_logging
from etchat.eval.etbench.scorers import OPTION_LETTERS
from etchat.io import write_json_atomic

logger = logging.getLogger(__name__)

# (task, source, number of samples) of the full benchmark (docs/design.md §9).
GROUP_SIZES = (
    ("rar", "perception_test", 500),
    ("eca", "charades_sta", 500),
    ("rvq", "star", 500),
    ("tvg", "charades_sta", 500),
    ("tvg", "qvhighlights", 500),
    ("epm", "ego4d_nlq", 500),
    ("tal", "thumos14", 146),
    ("tal", "thumos15", 292),
    ("tal", "perception_test", 500),
    ("evs", "summe", 25),
    ("evs", "tvsum", 50),
    ("vhd", "qvhighlights", 500),
    ("vhd", "youtube_highlights", 354),
    ("dvc", "youcook2", 416),
    ("dvc", "hirest", 75),
    ("slc", "cross_task", 283),
    ("slc", "ht_step", 394),
    ("tem", "perception_test", 500),
    ("tem", "qvhighlights", 464),
    ("gvq", "qa_ego4d", 290),
)
OUTCOMES = ("right", "wrong", "free")  # free: no usable letter / time, e.g. free text or a refusal
OUTCOME_WEIGHTS = (0.5, 0.3, 0.2)
PHRASES = (
    "a person opens the refrigerator",
    "the man cuts an onion on the board",
    "someone pours water into a glass",
    "a woman washes the dishes in the sink",
    "the person puts on a jacket",
    "a child throws a ball across the room",
    "the cook stirs the soup in the pot",
    "someone closes the door behind them",
    "a man reads a book on the sofa",
    "the person picks up a phone from the table",
    "a woman folds the laundry",
    "the chef adds salt to the pan",
    "someone sweeps the floor with a broom",
    "a man ties his shoes",
    "the person turns off the light",
    "a girl waters the plants by the window",
    "the worker tightens a bolt with a wrench",
    "someone spreads butter on the bread",
    "a man drinks coffee from a mug",
    "the person types on a laptop",
)
REFUSALS = ("I am not sure.", "The video does not show this.", "Sorry, I cannot answer that question.", "")


def _span(rng: random.Random, duration: float, min_len: float = 2.0) -> list[float]:
    length = rng.uniform(min_len, max(min_len + 1, duration / 4))
    start = rng.uniform(0, max(0.0, duration - length))
    return [round(start, 1), round(min(duration, start + length), 1)]


def _jitter(rng: random.Random, span: list[float], duration: float) -> list[float]:
    """A prediction near `span`: both ends moved by up to 40% of its length."""
    shift = 0.4 * (span[1] - span[0])
    start = max(0.0, span[0] + rng.uniform(-shift, shift))
    end = min(duration, span[1] + rng.uniform(-shift, shift))
    return [round(start, 1), round(max(end, start + 0.5), 1)]


def _spans(rng: random.Random, duration: float, count: int) -> list[list[float]]:
    """`count` disjoint, sorted spans inside [0, duration]."""
    bounds = sorted(rng.uniform(0, duration) for _ in range(2 * count))
    return [[round(bounds[2 * i], 1), round(bounds[2 * i + 1], 1)] for i in range(count)]


def _span_text(spans: list[list[float]]) -> str:
    return ", ".join(f"{s} - {e}" for s, e in spans)


def _letter_answer(rng: random.Random, letter: str, option: str) -> str:
    style = rng.randrange(4)
    if style == 0:
        return f"({letter}) {option}"
    if style == 1:
        return f"{letter}."
    if style == 2:
        return f"{letter}) {option}"
    return f"Best Option: ({letter})"


def _choice(rng: random.Random, outcome: str, options: list, answer: int) -> str:
    """A multiple-choice answer: the right letter, a wrong letter, or free text close to some option."""
    texts = [o if isinstance(o, str) else f"{o[0]} - {o[1]}" for o in options]
    if outcome == "right":
        return _letter_answer(rng, OPTION_LETTERS[answer], texts[answer])
    if outcome == "wrong":
        wrong = rng.choice([i for i in range(len(options)) if i != answer])
        return _letter_answer(rng, OPTION_LETTERS[wrong], texts[wrong])
    if rng.random() < 0.3:
        return rng.choice(REFUSALS)
    return f"I think it is when {rng.choice(texts)}."


def _options(rng: random.Random, count: int = 4) -> tuple[list[str], int]:
    return rng.sample(PHRASES, count), rng.randrange(count)


def _option_prompt(question: str, options: list[str]) -> str:
    lines = "\n".join(f"({OPTION_LETTERS[i]}) {option}" for i, option in enumerate(options))
    return f"{question}\nOptions:\n{lines}\nPlease choose the best option."


def _rar(rng, base, outcome):
    moment = round(rng.uniform(0, base["duration"]), 1)
    options, answer = _options(rng)
    q = _option_prompt("What is the person doing at <vid>?", options)
    return {**base, "q": q, "src": [moment], "o": options, "p": answer, "a": _choice(rng, outcome, options, answer)}


def _eca(rng, base, outcome):
    options = _spans(rng, base["duration"], 4)
    answer = rng.randrange(4)
    src = [t for span in options for t in span]
    q = _option_prompt(f"Which segment matches the caption '{rng.choice(PHRASES)}'?", ["<vid> - <vid>"] * 4)
    return {**base, "q": q, "src": src, "o": options, "p": answer, "a": _choice(rng, outcome, options, answer)}


def _rvq(rng, base, outcome):
    segment = _span(rng, base["duration"])
    options, answer = _options(rng)
    q = _option_prompt("What happens in the video between <vid> and <vid>?", options)
    return {**base, "q": q, "src": segment, "o": options, "p": answer, "a": _choice(rng, outcome, options, answer)}


def _grounding_answer(rng, outcome, truth, duration, lead="The event happens in"):
    if outcome == "free":
        return rng.choice(REFUSALS + ("It happens at the beginning of the video.",))
    start, end = _jitter(rng, truth, duration) if outcome == "right" else _span(rng, duration)
    if rng.random() < 0.2:
        return f"{lead} from {start} to {end} seconds."
    return f"{lead} {start} - {end} seconds."


def _tvg(rng, base, outcome):
    truth = _span(rng, base["duration"])
    q = (
        f"Find the moment when '{rng.choice(PHRASES)}'. The format of your response should be: "
        "'The event happens in <start time> - <end time>'."
    )
    return {**base, "q": q, "tgt": truth, "a": _grounding_answer(rng, outcome, truth, base["duration"])}


def _spans_answer(rng, outcome, truth, duration, lead):
    if outcome == "free":
        return rng.choice(REFUSALS)
    if outcome == "right":
        spans = [_jitter(rng, span, duration) for span in truth]
    else:
        spans = _spans(rng, duration, rng.randint(1, 4))
    return f"{lead} {_span_text(spans)} seconds."


def _tal(rng, base, outcome):
    truth = _spans(rng, base["duration"], rng.randint(1, 4))
    q = f"Localize all the moments of the action '{rng.choice(PHRASES)}'."
    return {**base, "q": q, "tgt": truth, "a": _spans_answer(rng, outcome, truth, base["duration"], "It happens in")}


def _evs(rng, base, outcome):
    truth = _spans(rng, base["duration"], rng.randint(3, 8))
    q = "Summarize the video into multiple short segments of about 15% of its length."
    answer = _spans_answer(rng, outcome, truth, base["duration"], "The summary locates in")
    return {**base, "q": q, "tgt": truth, "a": answer}


def _vhd(rng, base, outcome):
    duration = base["duration"]
    if base["source"] == "qvhighlights":
        truth = [_spans(rng, duration, rng.randint(1, 2)) for _ in range(3)]  # one list of windows per annotator
        windows = [w for annotator in truth for w in annotator]
    else:
        truth = _spans(rng, duration, rng.randint(1, 3))
        windows = truth
    if outcome == "right":
        start, end = rng.choice(windows)
        answer = f"The highlight moment happens in {round(rng.uniform(start, end), 1)} seconds."
    elif outcome == "wrong":
        answer = f"The highlight moment happens in {round(rng.uniform(0, duration), 1)} seconds."
    else:
        answer = rng.choice(REFUSALS)
    q = f"Find a highlight moment according to the sentence: '{rng.choice(PHRASES)}'."
    return {**base, "q": q, "tgt": truth, "a": answer}


def _captions_answer(rng, outcome, truth, captions, duration):
    if outcome == "free":
        return rng.choice(REFUSALS + ("The video shows someone cooking a meal.",))
    if outcome == "right":
        # Some captions reworded (a word dropped), some events missed.
        events = [(_jitter(rng, span, duration), _reword(rng, caption)) for span, caption in zip(truth, captions)]
        events = [event for event in events if rng.random() < 0.8] or events[:1]
    else:
        spans = _spans(rng, duration, rng.randint(1, 5))
        events = [(span, rng.choice(PHRASES)) for span in spans]
    return " ".join(f"{s} - {e} seconds, {caption}." for (s, e), caption in events)


def _reword(rng: random.Random, caption: str) -> str:
    words = caption.split()
    if rng.random() < 0.5:
        del words[rng.randrange(1, len(words))]
    return " ".join(words)


def _dense(rng, base, outcome):
    truth = _spans(rng, base["duration"], rng.randint(2, 6))
    captions = [rng.choice(PHRASES) for _ in truth]
    q = "Localize a series of events in the video and describe each of them briefly."
    answer = _captions_answer(rng, outcome, truth, captions, base["duration"])
    return {**base, "q": q, "tgt": truth, "g": captions, "a": answer}


def _tem(rng, base, outcome):
    truth = _spans(rng, base["duration"], rng.randint(1, 3))
    reference = _span(rng, base["duration"])
    q = "The event between <vid> and <vid> happens again later in the video. When does it happen?"
    answer = _grounding_answer(rng, outcome, rng.choice(truth), base["duration"], "It happens in")
    return {**base, "q": q, "src": reference, "tgt": truth, "a": answer}


def _gvq(rng, base, outcome):
    truth = _span(rng, base["duration"])
    options, answer = _options(rng)
    q = _option_prompt("What did I put in the drawer? Answer and give the moment.", options)
    letter_outcome = outcome if rng.random() < 0.8 else "free"
    choice = _choice(rng, letter_outcome, options, answer)
    time = _grounding_answer(rng, "right" if outcome == "right" else "wrong", truth, base["duration"])
    return {**base, "q": q, "o": options, "p": answer, "tgt": truth, "a": f"{choice} {time}"}


def _builder(task: str):
    return {
        "rar": _rar,
        "eca": _eca,
        "rvq": _rvq,
        "tvg": _tvg,
        "epm": _tvg,
        "tal": _tal,
        "evs": _evs,
        "vhd": _vhd,
        "dvc": _dense,
        "slc": _dense,
        "tem": _tem,
        "gvq": _gvq,
    }[task]


def make_predictions(scale: float = 1.0, seed: int = 0) -> list[dict]:
    """All 20 groups, each with ``max(1, round(size * scale))`` samples (idx 0..n-1 per group)."""
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    rng = random.Random(seed)
    samples = []
    for task, source, size in GROUP_SIZES:
        build = _builder(task)
        for idx in range(max(1, round(size * scale))):
            duration = round(rng.uniform(30, 300), 3)
            base = {"idx": idx, "task": task, "source": source, "video": f"{source}/{source}_{idx:05d}.mp4"}
            base["duration"] = duration
            outcome = rng.choices(OUTCOMES, OUTCOME_WEIGHTS)[0]
            samples.append(build(rng, base, outcome))
    return samples


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.toy.predictions",
        description="Write a seeded synthetic E.T. Bench prediction file (20 groups).",
    )
    parser.add_argument("--out", required=True, help="the .json file to write")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of each group's real size (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> Path:
    setup_logging()
    args = parse_args(argv)
    samples = make_predictions(args.scale, args.seed)
    out = Path(args.out)
    write_json_atomic(out, samples, indent=1)
    logger.info(f"Wrote {len(samples)} synthetic predictions to {out}")
    return out


if __name__ == "__main__":
    main()
