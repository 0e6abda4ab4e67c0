"""Scorers of the E.T. Bench tasks other than dense captioning: each takes one (task, source) group of predictions
and returns the official result dict (docs/design.md §9). Which scorer serves which task is said once, in
`etchat.eval.etbench.tasks`."""

from __future__ import annotations

import math

import torch
from nncore.ops import temporal_iou

from etchat.eval.etbench.parsing import (
    BRACKETED_LETTER,
    FIRST_NUMBER,
    leading_letter,
    parse_spans,
    strip_option_prefix,
)
from etchat.eval.metrics.similarity import SentenceSimilarity

IOU_THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
OPTION_LETTERS = "ABCDE"


def describe(sample: dict) -> str:
    return f"sample idx={sample.get('idx')} ({sample.get('task')}/{sample.get('source')})"


def _spans_tensor(sample: dict, spans) -> torch.Tensor:
    try:
        tensor = torch.Tensor(spans)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{describe(sample)}: malformed spans in 'tgt': {spans!r}") from error
    if tensor.dim() != 2 or tensor.shape[1] != 2:
        raise ValueError(f"{describe(sample)}: expected a list of [start, end] spans in 'tgt', got {spans!r}")
    return tensor


def _iou(sample: dict, gt_spans, pred_spans) -> torch.Tensor:
    """IoU matrix (ground truth x prediction) in float32, as the official script computes it."""
    return temporal_iou(_spans_tensor(sample, gt_spans), _spans_tensor(sample, pred_spans))


def _failed(outcomes: list) -> int:
    return sum(outcome is None for outcome in outcomes)


def _recall_result(samples: list[dict], per_sample: list[float | None], failed: int, prefix: str, mean_key: str):
    """Hit rates at each IoU threshold and mIoU over all samples; `per_sample` holds the IoUs of the scored samples
    (None for the others, which count as misses)."""
    ious = [iou for iou in per_sample if iou is not None]
    hits = [sum(iou >= thr for iou in ious) for thr in IOU_THRESHOLDS]
    recalls = [hit / len(samples) for hit in hits]
    result = {"Total": len(samples), "Failed": failed, "mIoU": round(sum(ious) / len(samples), 5)}
    for recall, thr in zip(recalls, IOU_THRESHOLDS):
        result[f"{prefix}@{thr}"] = round(recall, 5)
    result[mean_key] = round(sum(recalls) / len(recalls), 5)
    return result


def recall_columns(per_sample: list[float | None]) -> dict[str, list[float]]:
    """Per-sample statistics behind `_recall_result` (docs/design.md §18): ``iou`` (0 when not scored) and ``recall``,
    the share of thresholds the IoU reaches, whose mean over samples is the task's F1 / mRec."""
    ious = [0.0 if iou is None or math.isnan(iou) else iou for iou in per_sample]
    return {"iou": ious, "recall": [sum(iou >= thr for thr in IOU_THRESHOLDS) / len(IOU_THRESHOLDS) for iou in ious]}


def first_span_ious(samples: list[dict], best_of_targets: bool = False) -> list[float | None]:
    """IoU of each answer's first parsed span with ``tgt`` (the best over several target spans with
    `best_of_targets`, as TEM), None when no span parses."""
    ious = []
    for sample in samples:
        spans = parse_spans(sample["a"])
        if spans is None:
            ious.append(None)
        elif best_of_targets:
            ious.append(_iou(sample, sample["tgt"], spans[:1]).max().item())
        else:
            ious.append(_iou(sample, [sample["tgt"]], spans[:1]).item())
    return ious


def measure_grounding(samples: list[dict]) -> tuple[dict, dict]:
    """TVG, EPM: (result, per-sample statistics). The first parsed span against ``tgt``; F1@t = share of all samples
    with IoU >= t."""
    ious = first_span_ious(samples)
    return _recall_result(samples, ious, _failed(ious), "F1", "F1"), recall_columns(ious)


def score_grounding(samples: list[dict]) -> dict:
    return measure_grounding(samples)[0]


def measure_event_matching(samples: list[dict]) -> tuple[dict, dict]:
    """TEM: as TVG, with the IoU the best over the ground-truth spans."""
    ious = first_span_ious(samples, best_of_targets=True)
    return _recall_result(samples, ious, _failed(ious), "R", "mRec"), recall_columns(ious)


def score_event_matching(samples: list[dict]) -> dict:
    return measure_event_matching(samples)[0]


def action_localization_f1s(samples: list[dict]) -> list[list[float] | None]:
    """TAL: each sample's F1 at every threshold (spans matched at IoU >= t), None when no span parses."""
    per_sample = []
    for sample in samples:
        spans = parse_spans(sample["a"])
        if spans is None:
            per_sample.append(None)
            continue
        iou = _iou(sample, sample["tgt"], spans)
        f1s = [0.0] * len(IOU_THRESHOLDS)
        for i, thr in enumerate(IOU_THRESHOLDS):
            if iou.max() < thr:
                continue
            recall = (iou.amax(dim=1) >= thr).float().mean().item()
            precision = (iou.amax(dim=0) >= thr).float().mean().item()
            if precision + recall > 0:  # only NaN IoUs (zero-length spans) get here with 0; the official divides
                f1s[i] = 2 * precision * recall / (precision + recall)
        per_sample.append(f1s)
    return per_sample


def measure_action_localization(samples: list[dict]) -> tuple[dict, dict]:
    """TAL: per sample and threshold, F1 of spans matched at IoU >= t; mean over all samples."""
    per_sample = action_localization_f1s(samples)
    f1_sums = [0.0] * len(IOU_THRESHOLDS)
    for f1s in per_sample:
        for i, f1 in enumerate(f1s or ()):
            f1_sums[i] += f1
    f1s = [f1 / len(samples) for f1 in f1_sums]
    result = {"Total": len(samples), "Failed": _failed(per_sample)}
    for f1, thr in zip(f1s, IOU_THRESHOLDS):
        result[f"F1@{thr}"] = round(f1, 5)
    result["F1"] = round(sum(f1s) / len(f1s), 5)
    columns = {"f1": [0.0 if f1s is None else sum(f1s) / len(f1s) for f1s in per_sample]}
    return result, columns


def score_action_localization(samples: list[dict]) -> dict:
    return measure_action_localization(samples)[0]


def _second_mask(spans: list[list[float]], value: float) -> torch.Tensor:
    """Per-second map over 1000 s: seconds round(start) .. round(end) - 1 get `value` (Python rounding)."""
    mask = torch.zeros(1000)
    for start, end in spans:
        start, end = (min(max(t, -1e9), 1e9) for t in (start, end))  # round(inf) raises; slices clip anyway
        mask[max(0, round(start)) : round(end)] = value
    return mask


def summarization_f1s(samples: list[dict]) -> list[float | None]:
    """EVS: each sample's per-second overlap F1, None when no span parses."""
    per_sample = []
    for sample in samples:
        spans = parse_spans(sample["a"])
        if spans is None:
            per_sample.append(None)
            continue
        combined = _second_mask(sample["tgt"], 1) + _second_mask(spans, 2)
        tp, fp, fn = ((combined == v).sum().item() for v in (3, 2, 1))
        if tp == 0:
            per_sample.append(0)
            continue
        recall, precision = tp / (tp + fn), tp / (tp + fp)
        per_sample.append(2 * precision * recall / (precision + recall))
    return per_sample


def measure_summarization(samples: list[dict]) -> tuple[dict, dict]:
    """EVS: F1 of the per-second overlap; failed answers are left out of the mean (not scored 0)."""
    per_sample = summarization_f1s(samples)
    f1s = [f1 for f1 in per_sample if f1 is not None]
    result = {"Total": len(samples), "Failed": _failed(per_sample), "F1": round(sum(f1s) / len(f1s), 5) if f1s else 0}
    columns = {"f1": [f1 or 0.0 for f1 in per_sample], "parsed": [float(f1 is not None) for f1 in per_sample]}
    return result, columns


def score_summarization(samples: list[dict]) -> dict:
    return measure_summarization(samples)[0]


def highlight_hits(samples: list[dict]) -> list[bool | None]:
    """VHD: whether the first number of each answer lies in any annotator's window, None when there is no number."""
    per_sample = []
    for sample in samples:
        annotators = sample["tgt"]
        if not isinstance(annotators[0][0], (list, tuple)):
            annotators = [annotators]
        match = FIRST_NUMBER.search(sample["a"])
        if not match:
            per_sample.append(None)
            continue
        time = float(match.group(0))
        per_sample.append(any(start <= time <= end for windows in annotators for start, end in windows))
    return per_sample


def measure_highlight(samples: list[dict]) -> tuple[dict, dict]:
    """VHD: the first number of the answer is a hit if it lies in any annotator's window."""
    per_sample = highlight_hits(samples)
    hits = sum(bool(hit) for hit in per_sample)
    result = {"Total": len(samples), "Failed": _failed(per_sample), "F1": round(hits / len(samples), 5)}
    return result, {"hit": [float(bool(hit)) for hit in per_sample]}


def score_highlight(samples: list[dict]) -> dict:
    return measure_highlight(samples)[0]


def _option_letters(sample: dict) -> str:
    count = len(sample["o"])
    if count not in (4, 5):
        raise ValueError(f"{describe(sample)}: E.T. Bench questions have 4 or 5 options, got {count}")
    return "abcde"[:count]


def _option_texts(sample: dict) -> list[str]:
    """The options as the official similarity rule sees them: ``"(L) text"``, a time option as ``"a - b"``."""
    if len(sample["o"]) > len(OPTION_LETTERS):
        raise ValueError(f"{describe(sample)}: more than {len(OPTION_LETTERS)} options")
    texts = []
    for letter, option in zip(OPTION_LETTERS, sample["o"]):
        if isinstance(option, (list, tuple)):
            option = f"{option[0]} - {option[1]}"
        texts.append(f"({letter}) {option}")
    return texts


def _most_similar_options(questions: list[tuple[dict, str]], similarity: SentenceSimilarity) -> list[int]:
    """For each (sample, answer text), the index of the option most similar to the text (first one on ties).

    All texts are embedded together first: one large batch instead of two single-text calls per option.
    """
    options = [_option_texts(sample) for sample, _ in questions]
    similarity.prepare(text for (_, answer), texts in zip(questions, options) for text in (answer, *texts))
    return [similarity.most_similar(answer, texts) for (_, answer), texts in zip(questions, options)]


def multiple_choice_outcomes(samples: list[dict], similarity: SentenceSimilarity) -> tuple[list[bool], int]:
    """RAR, ECA, RVQ: whether each answer picks the right option (bracketed letter, else leading letter, else the most
    similar option; a wrong letter does not end the search), and how many answers had no letter at all."""
    letters = _option_letters(samples[0])  # the official script reads the option count of the first sample only
    correct, failed, undecided = [False] * len(samples), 0, []
    for position, sample in enumerate(samples):
        match = BRACKETED_LETTER.search(sample["a"])
        if match and match.group(1).lower() in letters and letters.index(match.group(1).lower()) == sample["p"]:
            correct[position] = True
            continue
        text = strip_option_prefix(sample["a"].lower())
        if not text:
            failed += 1
            continue
        letter = leading_letter(text)
        if letter is not None and letter in letters and letters.index(letter) == sample["p"]:
            correct[position] = True
            continue
        failed += not (match or letter is not None)
        undecided.append((position, text))
    choices = _most_similar_options([(samples[position], text) for position, text in undecided], similarity)
    for (position, _), choice in zip(undecided, choices):
        correct[position] = choice == samples[position]["p"]
    return correct, failed


def measure_multiple_choice(samples: list[dict], similarity: SentenceSimilarity) -> tuple[dict, dict]:
    """RAR, ECA, RVQ accuracy; "Failed" counts answers where no letter was recognised."""
    correct, failed = multiple_choice_outcomes(samples, similarity)
    result = {"Total": len(samples), "Failed": failed, "Acc": round(sum(correct) / len(samples), 5)}
    return result, {"correct": [float(right) for right in correct]}


def score_multiple_choice(samples: list[dict], similarity: SentenceSimilarity) -> dict:
    return measure_multiple_choice(samples, similarity)[0]


def _grounded_answers_right(samples: list[dict], similarity: SentenceSimilarity) -> list[bool | None]:
    """GVQ answer check of each sample: a leading letter is final; otherwise the most similar option. None when the
    answer is empty."""
    verdicts: list[bool | None] = []
    undecided = []
    for position, sample in enumerate(samples):
        text = strip_option_prefix(sample["a"])
        if not text:
            verdicts.append(None)
            continue
        letters, letter = _option_letters(sample), leading_letter(text)
        if letter is not None and letter in letters:
            verdicts.append(letters.index(letter) == sample["p"])
        else:
            verdicts.append(False)  # decided below, by similarity
            undecided.append((position, text))
    choices = _most_similar_options([(samples[position], text) for position, text in undecided], similarity)
    for (position, _), choice in zip(undecided, choices):
        verdicts[position] = choice == samples[position]["p"]
    return verdicts


def measure_grounded_qa(samples: list[dict], similarity: SentenceSimilarity) -> tuple[dict, dict]:
    """GVQ: for correctly answered samples only, the first parsed span vs ``tgt``; recall over all samples."""
    verdicts = _grounded_answers_right(samples, similarity)
    ious = [None] * len(samples)
    failed = sum(verdict is None for verdict in verdicts)
    for position, (sample, verdict) in enumerate(zip(samples, verdicts)):
        if not verdict:
            continue
        spans = parse_spans(sample["a"])
        if spans is None:
            failed += 1
            continue
        ious[position] = _iou(sample, [sample["tgt"]], spans[:1]).item()
    result = _recall_result(samples, ious, failed, "R", "mRec")
    result["Acc"] = round(sum(bool(verdict) for verdict in verdicts) / len(samples), 5)
    columns = {**recall_columns(ious), "correct": [float(bool(verdict)) for verdict in verdicts]}
    return result, columns


def score_grounded_qa(samples: list[dict], similarity: SentenceSimilarity) -> dict:
    return measure_grounded_qa(samples, similarity)[0]
