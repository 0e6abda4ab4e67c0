"""Rewards of stage 4 (docs/design.md §20): a sampled answer is read by the E.T. Bench scorer's own rules
(`etchat.eval.etbench`) and scored against the sample's reference answer, read by the same rules.

Each answer gets up to three parts, each in [0, 1] (docs/design.md §20 has them as a table):

- `time`, by the kind of task: the tIoU of the first span (single span: tvg, epm, the toy's qvh_mr, as the TVG scorer);
  its best tIoU over the reference spans (event: tem, the TEM scorer); F1 of the spans at IoU 0.1 / 0.3 / 0.5 / 0.7,
  averaged (spans: tal, the TAL scorer); the per-second F1 (summary: evs, the EVS scorer); 1 - |t - t_ref| / duration,
  at least 0 (moment: vhd, the toy's qvh_hd); the detection F1 at the four thresholds, averaged (dense captions: dvc,
  slc, the toy's densecap, the DVC scorer's detection);
- `caption`, dense captions only: the sentence similarity of the captions matched at each threshold, averaged (the
  DVC scorer's SentSim);
- `format`: 1 when the answer parses by its task's rules (spans, a time, or timed captions), else 0.

The reward is the weighted sum of the parts an answer has. Tasks of no kind (multiple choice, plain QA) get no reward;
stage 4 leaves them out.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from etchat.eval.etbench.dense_captioning import detection_precision_recall
from etchat.eval.etbench.parsing import FIRST_NUMBER, parse_dense_captions, parse_spans
from etchat.eval.etbench.scorers import (
    IOU_THRESHOLDS,
    score_action_localization,
    score_event_matching,
    score_grounding,
    score_summarization,
)
from etchat.eval.metrics.captions import match_captions, remove_non_ascii

REWARD_PARTS = ("time", "caption", "format")

# Task name -> kind of answer. The E.T. Bench tasks, plus the toy world's questions of the QVHighlights and
# dense-captioning benchmarks (etchat.toy.synthetic).
TASK_KINDS = {
    "tvg": "span",
    "epm": "span",
    "qvh_mr": "span",
    "tem": "event",
    "tal": "spans",
    "evs": "summary",
    "vhd": "moment",
    "qvh_hd": "moment",
    "dvc": "captions",
    "slc": "captions",
    "densecap": "captions",
}


@dataclass(frozen=True)
class Reference:
    """What an answer is scored against: its task, the reference answer with its times written in (as inference
    writes an answer: `<vid>` replaced by seconds), and the video's duration in seconds."""

    task: str
    answer: str
    duration: float


def reward_kind(task: str | None) -> str | None:
    return TASK_KINDS.get(task)


def parses(answer: str, kind: str) -> bool:
    """Whether `answer` parses by the scorer's rules for answers of `kind`."""
    if kind == "moment":
        return FIRST_NUMBER.search(answer) is not None
    if kind == "captions":
        return parse_dense_captions(answer)[0] is not None
    return parse_spans(answer) is not None


def reference_problem(reference: Reference) -> str | None:
    """Why `reference` cannot score answers (a task without a reward, a reference answer that does not parse, a
    duration that is not positive), or None."""
    kind = reward_kind(reference.task)
    if kind is None:
        return f"no reward is defined for task {reference.task!r}"
    if not parses(reference.answer, kind):
        return f"the reference answer {reference.answer!r} does not parse as a {kind} answer"
    if kind == "moment" and not reference.duration > 0:
        return f"the video duration {reference.duration!r} is not positive"
    return None


def _scored(scorer, key: str, answer: str, truth) -> float:
    """One sample through an E.T. Bench scorer: its score of the group made of that sample alone."""
    return float(scorer([{"a": answer, "tgt": truth}])[key])


def span_reward(answer: str, reference: Reference) -> float:
    kind = reward_kind(reference.task)
    truth = parse_spans(reference.answer)
    if kind == "span":
        return _scored(score_grounding, "mIoU", answer, truth[0])
    if kind == "event":
        return _scored(score_event_matching, "mIoU", answer, truth)
    if kind == "spans":
        return _scored(score_action_localization, "F1", answer, truth)
    return _scored(score_summarization, "F1", answer, truth)


def moment_reward(answer: str, reference: Reference) -> float:
    match = FIRST_NUMBER.search(answer)
    if match is None:
        return 0.0
    truth = float(FIRST_NUMBER.search(reference.answer).group(0))
    return max(0.0, 1.0 - abs(float(match.group(0)) - truth) / reference.duration)


def caption_rewards(answer: str, reference: Reference, similarity: Callable[[list[str], list[str]], float]):
    """(detection F1, caption similarity) of a dense-captioning answer, as the DVC scorer computes them for one
    video: F1 of the precision and recall at IoU > t, and the mean similarity of the (prediction, reference) caption
    pairs matched at IoU >= t (an unmatched prediction paired with a random string), each averaged over the
    thresholds. `similarity(refs, hyps)` is the mean similarity of paired captions."""
    spans, captions = parse_dense_captions(answer)
    if spans is None:
        return 0.0, 0.0
    ref_spans, ref_captions = parse_dense_captions(reference.answer)
    references = {"video": (ref_spans, ref_captions)}
    predictions = {"video": list(zip(spans, captions))}
    proposals = [(span, remove_non_ascii(caption)) for span, caption in predictions["video"]]
    events = [(span, remove_non_ascii(caption)) for span, caption in zip(ref_spans, ref_captions)]
    rng = random.Random(0)  # the stand-in captions of unmatched predictions, the same for every answer
    f1s, sims = [], []
    for tiou in IOU_THRESHOLDS:
        precision, recall = detection_precision_recall(references, predictions, tiou)
        f1s.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
        pairs = match_captions(proposals, events, tiou, rng)
        sims.append(similarity([ref for _, ref in pairs], [hyp for hyp, _ in pairs]) if pairs else 0.0)
    return sum(f1s) / len(f1s), sum(sims) / len(sims)


class TemporalRewards:
    """The rewards of stage 4. `weights` weigh the parts (time, caption, format); the sentence model of the caption
    part is made on first use (only dense-captioning answers need it)."""

    def __init__(self, weights: tuple[float, float, float] = (1.0, 1.0, 1.0), device: str = "cpu"):
        if len(weights) != len(REWARD_PARTS):
            raise ValueError(f"reward weights must be {len(REWARD_PARTS)} numbers ({', '.join(REWARD_PARTS)})")
        self.weights = dict(zip(REWARD_PARTS, (float(w) for w in weights)))
        self.device = device
        self._similarity = None

    def _mean_similarity(self, refs: list[str], hyps: list[str]) -> float:
        if self._similarity is None:
            from etchat.eval.metrics.similarity import SentenceSimilarity

            self._similarity = SentenceSimilarity(self.device)
        return self._similarity.mean_paired(refs, hyps)

    def parts(self, answer: str, reference: Reference) -> dict[str, float]:
        """The parts this answer has (`caption` only for dense-captioning tasks)."""
        kind = reward_kind(reference.task)
        if kind is None:
            raise ValueError(f"no reward is defined for task {reference.task!r}")
        parts = {"format": float(parses(answer, kind))}
        if kind == "captions":
            parts["time"], parts["caption"] = caption_rewards(answer, reference, self._mean_similarity)
        elif kind == "moment":
            parts["time"] = moment_reward(answer, reference)
        else:
            parts["time"] = span_reward(answer, reference)
        return parts

    def total(self, parts: dict[str, float]) -> float:
        return sum(self.weights[name] * value for name, value in parts.items())
