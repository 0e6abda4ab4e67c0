"""The words of the synthetic data: each task's question and answer (stage 3 and the test split share them), the
captions of stage 1 and the QA of stage 2."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from etchat.eval.dvc.prompts import ACTIVITYNET_QUESTION
from etchat.eval.etbench.scorers import OPTION_LETTERS
from etchat.eval.qvhighlights.prompts import question as qvh_question
from etchat.toy.synthetic.scenes import (
    CELLS,
    COLOURS,
    CORNERS,
    DIRECTION_WORDS,
    NUMBER_WORDS,
    SHAPES,
    SOURCE,
    ImageSpec,
    VideoSpec,
)


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


# The questions of the QVHighlights and dense-captioning benchmarks (etchat.eval.qvhighlights, etchat.eval.dvc),
# trained in stage 3 so that the toy model knows them; their test split is written in those benchmarks' formats.


def _qvh_mr_items(spec: VideoSpec, rng) -> list[TaskItem]:
    event = spec.events[int(rng.integers(len(spec.events)))]
    answer = "The event happens in <vid> - <vid>."
    truth = {"tgt": [event.start, event.end]}
    return [TaskItem("qvh_mr", qvh_question("mr", event.caption), answer, [], [event.start, event.end], truth)]


def _qvh_hd_items(spec: VideoSpec, rng) -> list[TaskItem]:
    event = spec.events[int(rng.integers(len(spec.events)))]
    answer = "The highlight moment happens in <vid>."
    middle = (event.start + event.end) // 2
    return [TaskItem("qvh_hd", qvh_question("hd", event.caption), answer, [], [middle], {"tgt": [middle]})]


def _densecap_items(spec: VideoSpec, rng) -> list[TaskItem]:
    (item,) = _dvc_items(spec, rng)
    return [TaskItem("densecap", ACTIVITYNET_QUESTION, item.answer, [], item.tgt, item.truth)]


# The tasks the synthetic data poses, each with its builder of (question, answer, times, ground truth) items. New
# tasks go last: each video's builders draw from one generator in this order.
TASK_BUILDERS = {
    "tvg": _tvg_items,
    "vhd": _vhd_items,
    "tal": _tal_items,
    "dvc": _dvc_items,
    "rar": _rar_items,
    "rvq": _rvq_items,
    "eca": _eca_items,
    "qvh_mr": _qvh_mr_items,
    "qvh_hd": _qvh_hd_items,
    "densecap": _densecap_items,
}


TASKS = tuple(TASK_BUILDERS)
BENCHMARK_TASKS = ("qvh_mr", "qvh_hd", "densecap")  # tested in the QVHighlights / dense-captioning formats
ETBENCH_TASKS = tuple(task for task in TASKS if task not in BENCHMARK_TASKS)  # tested as E.T. Bench samples


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


def image_qa(spec: ImageSpec, rng) -> list[tuple[str, str]]:
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


def video_qa(spec: VideoSpec, rng) -> list[tuple[str, str]]:
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


def text_qa(rng) -> list[tuple[str, str]]:
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    pairs = [
        (f"How many corners does a {shape} have?", f"A {shape} has {CORNERS[shape]} corners."),
        (f"Is {colour} a colour or a shape?", f"{colour.capitalize()} is a colour."),
        (f"Is a {shape} a colour or a shape?", f"A {shape} is a shape."),
    ]
    return [pairs[i] for i in rng.permutation(len(pairs))[: int(rng.integers(1, 3))]]


def qa_conversation(pairs: list[tuple[str, str]], with_media: bool) -> list[dict]:
    turns = []
    for i, (question, answer) in enumerate(pairs):
        prefix = "<image>\n" if with_media and i == 0 else ""
        turns += [{"from": "human", "value": prefix + question}, {"from": "gpt", "value": answer}]
    return turns


def plain_conversation(caption: str) -> list[dict]:
    return [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": caption}]
