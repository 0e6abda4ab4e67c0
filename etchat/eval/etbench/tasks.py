"""The E.T. Bench tasks: one `TaskSpec` per task says everything the project needs to know about it.

Inference reads `best_option_prompt`; scoring reads `fields`, `metrics` and `measure`; the report reads `category` and
`headline`; the toy baselines read `options`. A new task is one more entry in `TASKS` (in the column order of the
official Overall row); a new report section is one more `Category`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from etchat.eval.etbench.dense_captioning import measure_dense_captioning
from etchat.eval.etbench.scorers import (
    IOU_THRESHOLDS,
    measure_action_localization,
    measure_event_matching,
    measure_grounded_qa,
    measure_grounding,
    measure_highlight,
    measure_multiple_choice,
    measure_summarization,
)
from etchat.eval.metrics.captions import CAPTION_METRICS, CaptionScorers, require_java
from etchat.eval.metrics.meteor import Meteor
from etchat.eval.metrics.similarity import SentenceSimilarity


class ScoringTools:
    """What the scorers of one evaluation share: the sentence model and the caption scorers (each made on first use
    unless given) and the generator of the random stand-in captions."""

    def __init__(
        self,
        seed: int = 0,
        device: str = "cpu",
        similarity: SentenceSimilarity | None = None,
        captions: CaptionScorers | None = None,
    ):
        self.rng = random.Random(seed)
        self.device = device
        self._similarity, self._captions = similarity, captions
        self._own_captions = False

    @property
    def similarity(self) -> SentenceSimilarity:
        if self._similarity is None:
            self._similarity = SentenceSimilarity(self.device)
        return self._similarity

    @property
    def captions(self) -> CaptionScorers:
        if self._captions is None:
            meteor = Meteor(require_java())  # first, so that its Java process loads while the sentence model does
            try:
                self._captions = CaptionScorers(self.similarity, meteor)
            except BaseException:
                meteor.close()
                raise
            self._own_captions = True
        return self._captions

    def start_captions(self) -> None:
        """Start METEOR's Java process now, so that it loads while the groups before the caption tasks are scored."""
        self.captions.start()

    def close(self) -> None:
        """Stop what this object started (the METEOR process); given scorers stay open for their owner."""
        if self._own_captions:
            self._captions.close()
            self._captions, self._own_captions = None, False


# A group's scorer returns the official result and the per-sample statistics behind it (docs/design.md §18).
Scorer = Callable[[list[dict], ScoringTools], tuple[dict, dict[str, list[float]]]]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    category: str  # the report section (a key of CATEGORIES)
    fields: tuple[str, ...]  # annotation fields the scorer reads, besides idx, source and the answer a
    metrics: tuple[str, ...]  # keys of a group's result besides Total and Failed, in the result's order
    headline: tuple[tuple[str, str], ...]  # (metric, column of the Overall row)
    measure: Scorer
    options: bool = False  # multiple choice: 'o' holds the options, 'p' the index of the right one
    best_option_prompt: bool = False  # the published prompt goes on with "Best Option: (" (and a repetition penalty)
    uses_captions: bool = False  # needs the caption metrics (Java)

    def score(self, samples: list[dict], tools: ScoringTools) -> dict:
        return self.measure(samples, tools)[0]

    def empty_result(self) -> dict:
        """Scores of a group with no sample (possible with --subset): all 0, as the official EVS scorer gives."""
        return {"Total": 0, "Failed": 0, **dict.fromkeys(self.metrics, 0)}


@dataclass(frozen=True)
class Category:
    """A section of the report: its per-group table columns, the mean lines under it, its Merged-row columns, and
    per-task mean lines after it ((label, metric) pairs)."""

    name: str
    columns: tuple[str, ...]
    means: tuple[tuple[str, str], ...]
    merged: tuple[tuple[str, str], ...]  # (column of the Merged row, metric averaged over the category's tasks)
    task_means: tuple[tuple[str, str], ...] = ()


_F1_AT = tuple(f"F1@{t}" for t in IOU_THRESHOLDS)
_R_AT = tuple(f"R@{t}" for t in IOU_THRESHOLDS)


def _multiple_choice(samples, tools):
    return measure_multiple_choice(samples, tools.similarity)


def _grounded_qa(samples, tools):
    return measure_grounded_qa(samples, tools.similarity)


def _dense_captioning(samples, tools):
    return measure_dense_captioning(samples, lambda: tools.captions, tools.rng)


def _without_tools(scorer: Callable[[list[dict]], tuple[dict, dict]]) -> Scorer:
    return lambda samples, tools: scorer(samples)


def _referring(name: str, label: str) -> TaskSpec:
    return TaskSpec(
        name, "Referring", ("o", "p"), ("Acc",), (("Acc", label),), _multiple_choice, True, best_option_prompt=True
    )


def _grounding(name: str, metrics: tuple[str, ...], scorer) -> TaskSpec:
    return TaskSpec(name, "Grounding", ("tgt",), metrics, (("F1", f"{name.upper()} (F1)"),), _without_tools(scorer))


def _captioning(name: str) -> TaskSpec:
    headline = (("F1", f"{name.upper()} (F1)"), ("SentSim", f"{name.upper()} (Sim)"))
    metrics = (*_F1_AT, "F1", *CAPTION_METRICS)
    return TaskSpec(name, "Captioning", ("video", "tgt", "g"), metrics, headline, _dense_captioning, uses_captions=True)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _referring("rar", "RAR (Acc)"),
        _referring("eca", "ECA (Acc)"),
        _referring("rvq", "RVQ (Acc)"),
        _grounding("tvg", ("mIoU", *_F1_AT, "F1"), measure_grounding),
        _grounding("epm", ("mIoU", *_F1_AT, "F1"), measure_grounding),
        _grounding("tal", (*_F1_AT, "F1"), measure_action_localization),
        _grounding("evs", ("F1",), measure_summarization),
        _grounding("vhd", ("F1",), measure_highlight),
        _captioning("dvc"),
        _captioning("slc"),
        TaskSpec(
            "tem",
            "Complex",
            ("tgt",),
            ("mIoU", *_R_AT, "mRec"),
            (("mRec", "TEM (Rec)"),),
            _without_tools(measure_event_matching),
        ),
        TaskSpec(
            "gvq",
            "Complex",
            ("o", "p", "tgt"),
            ("mIoU", *_R_AT, "mRec", "Acc"),
            (("mRec", "GVQ (Rec)"),),
            _grounded_qa,
            options=True,
        ),
    )
}

CATEGORIES: dict[str, Category] = {
    category.name: category
    for category in (
        Category("Referring", ("Total", "Failed", "Acc"), (("Mean Acc", "Acc"),), (("Acc (ref)", "Acc"),)),
        Category("Grounding", ("Total", "Failed", *_F1_AT, "F1"), (("Mean F1", "F1"),), (("F1 (gnd)", "F1"),)),
        Category(
            "Captioning",
            ("Total", "Failed", *_F1_AT, "F1", *CAPTION_METRICS),
            (("Mean F1", "F1"), ("Mean SentSim", "SentSim")),
            (("F1 (cap)", "F1"), ("Sim (cap)", "SentSim")),
        ),
        Category(
            "Complex", ("Total", "Failed", *_R_AT, "mRec", "Acc"), (), (("Rec (com)", "mRec"),), (("Mean Rec", "mRec"),)
        ),
    )
}


def tasks_of(category: str) -> tuple[str, ...]:
    return tuple(name for name, spec in TASKS.items() if spec.category == category)


def option_tasks() -> tuple[str, ...]:
    """Tasks whose samples are multiple-choice questions."""
    return tuple(name for name, spec in TASKS.items() if spec.options)
