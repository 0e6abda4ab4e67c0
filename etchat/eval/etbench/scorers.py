"""Scorers of the E.T. Bench tasks other than dense captioning: each takes one (task, source) group of predictions
and returns the official result dict (docs/design.md §9). Which scorer serves which task is said once, in
`etchat.eval.etbench.tasks`."""

from __future__ import annotations

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


def _recall_result(samples: list[dict], ious: list[float], failed: int, prefix: str, mean_key: str) -> dict:
    hits = [sum(iou >= thr for iou in ious) for thr in IOU_THRESHOLDS]
    recalls = [hit / len(samples) for hit in hits]
    result = {"Total": len(samples), "Failed": failed, "mIoU": round(sum(ious) / len(samples), 5)}
    for recall, thr in zip(recalls, IOU_THRESHOLDS):
        result[f"{prefix}@{thr}"] = round(recall, 5)
    result[mean_key] = round(sum(recalls) / len(recalls), 5)
    return result


def score_grounding(samples: list[dict]) -> dict:
    """TVG, EPM: the first parsed span against ``tgt``; F1@t = share of all samples with IoU >= t."""
    ious, failed = [], 0
    for sample in samples:
        spans = parse_spans(sample["a"])
        if spans is None:
            failed += 1
            continue
        ious.append(_iou(sample, [sample["tgt"]], spans[:1]).item())
    return _recall_result(samples, ious, failed, "F1", "F1")


def score_event_matching(samples: list[dict]) -> dict:
    """TEM: as TVG, with the IoU the best over the ground-truth spans."""
    ious, failed = [], 0
    for sample in samples:
        spans = parse_spans(sample["a"])
        if spans is None:
            failed += 1
            continue
        ious.append(_iou(sample, sample["tgt"], spans[:1]).max().item())
    return _recall_result(samples, ious, failed, "R", "mRec")


def score_action_localization(samples: list[dict]) -> dict:
    """TAL: per sample and threshold, F1 of spans matched at IoU >= t; mean over all samples."""
    f1_sums, failed = [0.0] * len(IOU_THRESHOLDS), 0
    for sample in samples:
        spans = parse_spans(sample["a"])
        if spans is None:
            failed += 1
            continue
        iou = _iou(sample, sample["tgt"], spans)
        for i, thr in enumerate(IOU_THRESHOLDS):
            if iou.max() < thr:
                continue
            recall = (iou.amax(dim=1) >= thr).float().mean().item()
            precision = (iou.amax(dim=0) >= thr).float().mean().item()
            if precision + recall > 0:  # only NaN IoUs (zero-length spans) get here with 0; the official divides
                f1_sums[i] += 2 * precision * recall / (precision + recall)
    f1s = [f1 / len(samples) for f1 in f1_sums]
    result = {"Total": len(samples), "Failed": failed}
    for f1, thr in zip(f1s, IOU_THRESHOLDS):
        result[f"F1@{thr}"] = round(f1, 5)
    result["F1"] = round(sum(f1s) / len(f1s), 5)
    return result


def _second_mask(spans: list[list[float]], value: float) -> torch.Tensor:
    """Per-second map over 1000 s: seconds round(start) .. round(end) - 1 get `value` (Python rounding)."""
    mask = torch.zeros(1000)
    for start, end in spans:
        start, end = (min(max(t, -1e9), 1e9) for t in (start, end))  # round(inf) raises; slices clip anyway
        mask[max(0, round(start)) : round(end)] = value
    return mask


def score_summarization(samples: list[dict]) -> dict:
    """EVS: F1 of the per-second overlap; failed answers are left out of the mean (not scored 0)."""
    f1s, failed = [], 0
    for sample in samples:
        spans = parse_spans(sample["a"])
        if spans is None:
            failed += 1
            continue
        combined = _second_mask(sample["tgt"], 1) + _second_mask(spans, 2)
        tp, fp, fn = ((combined == v).sum().item() for v in (3, 2, 1))
        if tp == 0:
            f1s.append(0)
            continue
        recall, precision = tp / (tp + fn), tp / (tp + fp)
        f1s.append(2 * precision * recall / (precision + recall))
    return {"Total": len(samples), "Failed": failed, "F1": round(sum(f1s) / len(f1s), 5) if f1s else 0}


def score_highlight(samples: list[dict]) -> dict:
    """VHD: the first number of the answer is a hit if it lies in any annotator's window."""
    hits, failed = 0, 0
    for sample in samples:
        annotators = sample["tgt"]
        if not isinstance(annotators[0][0], (list, tuple)):
            annotators = [annotators]
        match = FIRST_NUMBER.search(sample["a"])
        if not match:
            failed += 1
            continue
        time = float(match.group(0))
        hits += any(start <= time <= end for windows in annotators for start, end in windows)
    return {"Total": len(samples), "Failed": failed, "F1": round(hits / len(samples), 5)}


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


def score_multiple_choice(samples: list[dict], similarity: SentenceSimilarity) -> dict:
    """RAR, ECA, RVQ accuracy: bracketed letter, else leading letter, else the most similar option.

    A wrong letter does not end the search; "Failed" counts answers where no letter was recognised.
    """
    letters = _option_letters(samples[0])  # the official script reads the option count of the first sample only
    hits, failed, undecided = 0, 0, []
    for sample in samples:
        match = BRACKETED_LETTER.search(sample["a"])
        if match and match.group(1).lower() in letters and letters.index(match.group(1).lower()) == sample["p"]:
            hits += 1
            continue
        text = strip_option_prefix(sample["a"].lower())
        if not text:
            failed += 1
            continue
        letter = leading_letter(text)
        if letter is not None and letter in letters and letters.index(letter) == sample["p"]:
            hits += 1
            continue
        failed += not (match or letter is not None)
        undecided.append((sample, text))
    choices = _most_similar_options(undecided, similarity)
    hits += sum(choice == sample["p"] for (sample, _), choice in zip(undecided, choices))
    return {"Total": len(samples), "Failed": failed, "Acc": round(hits / len(samples), 5)}


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


def score_grounded_qa(samples: list[dict], similarity: SentenceSimilarity) -> dict:
    """GVQ: for correctly answered samples only, the first parsed span vs ``tgt``; recall over all samples."""
    ious, failed, correct = [], 0, 0
    for sample, verdict in zip(samples, _grounded_answers_right(samples, similarity)):
        if verdict is None:
            failed += 1
        if not verdict:
            continue
        correct += 1
        spans = parse_spans(sample["a"])
        if spans is None:
            failed += 1
            continue
        ious.append(_iou(sample, [sample["tgt"]], spans[:1]).item())
    result = _recall_result(samples, ious, failed, "R", "mRec")
    result["Acc"] = round(correct / len(samples), 5)
    return result
