"""Dense captioning (DVC, SLC) as the official E.T. Bench scoring computes it: detection precision / recall at four
IoU thresholds, and caption metrics of the predicted captions against the references they overlap, per video, then
averaged (docs/design.md §9)."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from etchat.eval.etbench.parsing import parse_dense_captions
from etchat.eval.etbench.scorers import IOU_THRESHOLDS, describe
from etchat.eval.metrics.captions import (
    CAPTION_METRICS,
    CaptionScorers,
    count_covered,
    match_captions,
    ptb_tokenize,
    remove_non_ascii,
)

MAX_PROPOSALS = 1000


def detection_precision_recall(references: dict, predictions: dict, tiou: float) -> tuple[float, float]:
    """Mean over videos of the share of predictions / references covered at IoU > tiou (strict)."""
    precisions, recalls = [], []
    for video, (ref_spans, _) in references.items():
        preds = predictions[video]
        covered_preds, covered_refs = count_covered([span for span, _ in preds], ref_spans, tiou)
        precisions.append(covered_preds / len(preds))
        recalls.append(covered_refs / len(ref_spans))
    return sum(precisions) / len(precisions), sum(recalls) / len(recalls)


def caption_pairs(references: dict, predictions: dict, tiou: float, rng: random.Random) -> list[tuple]:
    """(video, predicted caption, reference caption) of each video's `match_captions`, non-ASCII characters removed."""
    pairs = []
    for video, (ref_spans, ref_captions) in references.items():
        proposals = [(span, remove_non_ascii(caption)) for span, caption in predictions[video]]
        events = [(span, remove_non_ascii(caption)) for span, caption in zip(ref_spans, ref_captions)]
        pairs += [(video, hyp, ref) for hyp, ref in match_captions(proposals, events, tiou, rng)]
    return pairs


def caption_scores(tokenized_pairs_per_threshold: list[list[tuple]], scorers: CaptionScorers) -> list[dict]:
    """Caption metrics at each threshold from PTB-tokenized (video, hypothesis, reference) pairs: scored per video,
    then averaged over videos. All thresholds' video sets are scored in one call, so that what they share (most
    matched pairs recur at every threshold) is computed once."""
    per_threshold = []
    for pairs in tokenized_pairs_per_threshold:
        per_video: dict[str, tuple[dict, dict]] = {}
        for index, (video, hyp, ref) in enumerate(pairs):
            video_refs, video_hyps = per_video.setdefault(video, ({}, {}))
            video_refs[index], video_hyps[index] = [ref], [hyp]
        per_threshold.append(list(per_video.values()))
    rows = iter(scorers.score_sets([video_set for video_sets in per_threshold for video_set in video_sets]))
    return [_mean_over_videos([next(rows) for _ in video_sets]) for video_sets in per_threshold]


def _mean_over_videos(rows: list[dict]) -> dict:
    # BLEU is averaged as one (videos x 4) array like the official script: numpy sums that axis in another order
    # than a 1-D mean would, which can change the last bits.
    bleu = np.mean([[row[f"Bleu_{n}"] for n in range(1, 5)] for row in rows], axis=0)
    scores = {f"Bleu_{n}": bleu[n - 1] for n in range(1, 5)}
    scores.update({metric: np.mean([row[metric] for row in rows]) for metric in CAPTION_METRICS[4:]})
    return scores


def tokenize_pairs(pairs_per_threshold: list[list[tuple]]) -> list[list[tuple]]:
    """PTB-tokenize the captions of all thresholds in one Java call (each line is tokenized on its own)."""
    texts = [text for pairs in pairs_per_threshold for _, hyp, ref in pairs for text in (hyp, ref)]
    tokens = iter(ptb_tokenize(texts))
    return [[(video, next(tokens), next(tokens)) for video, _, _ in pairs] for pairs in pairs_per_threshold]


def score_dense_captioning(samples: list[dict], scorers: Callable[[], CaptionScorers], rng: random.Random) -> dict:
    """DVC, SLC: detection F1 (IoU > t, scaled by the parsed share) and caption metrics, averaged over thresholds.

    `scorers` returns the (shared) caption scorers; it is called only when some answer parses. `rng` draws the
    stand-in references of unmatched predictions.
    """
    references, predictions, failed = {}, {}, 0
    for sample in samples:
        spans, captions = parse_dense_captions(sample["a"])
        if spans is None:
            failed += 1
            continue
        if not sample["tgt"] or len(sample["g"]) < len(sample["tgt"]):
            raise ValueError(f"{describe(sample)}: needs at least one event in 'tgt' and a caption in 'g' for each")
        # Keyed by video like the official script: a later sample of the same video replaces an earlier one.
        references[sample["video"]] = (sample["tgt"], sample["g"])
        predictions[sample["video"]] = list(zip(spans, captions))[:MAX_PROPOSALS]
    scale = len(predictions) / len(samples)

    per_threshold = {key: [0] * len(IOU_THRESHOLDS) for key in ("Recall", "Precision", *CAPTION_METRICS)}
    if references:
        pairs = tokenize_pairs([caption_pairs(references, predictions, tiou, rng) for tiou in IOU_THRESHOLDS])
        for i, scores in enumerate(caption_scores(pairs, scorers())):
            for metric, value in scores.items():
                per_threshold[metric][i] = value
        for i, tiou in enumerate(IOU_THRESHOLDS):
            precision, recall = detection_precision_recall(references, predictions, tiou)
            per_threshold["Precision"][i], per_threshold["Recall"][i] = precision, recall

    result = {"Total": len(samples), "Failed": failed}
    f1s = []
    for recall, precision, thr in zip(per_threshold["Recall"], per_threshold["Precision"], IOU_THRESHOLDS):
        recall, precision = recall * scale, precision * scale
        f1 = 0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
        result[f"F1@{thr}"] = round(f1, 5)
        f1s.append(f1)
    result["F1"] = round(sum(f1s) / len(f1s), 5)
    for metric in CAPTION_METRICS:
        # np.float64 values round with numpy's rule, exactly as in the official script.
        result[metric] = round(sum(per_threshold[metric]) / len(IOU_THRESHOLDS), 5)
    return result
