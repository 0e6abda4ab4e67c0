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


def detection_per_video(references: dict, predictions: dict, tiou: float) -> dict[str, tuple[float, float]]:
    """Per video, the share of its predictions and of its references covered at IoU > tiou (strict)."""
    shares = {}
    for video, (ref_spans, _) in references.items():
        preds = predictions[video]
        covered_preds, covered_refs = count_covered([span for span, _ in preds], ref_spans, tiou)
        shares[video] = (covered_preds / len(preds), covered_refs / len(ref_spans))
    return shares


def detection_precision_recall(references: dict, predictions: dict, tiou: float) -> tuple[float, float]:
    """Mean over videos of the share of predictions / references covered at IoU > tiou (strict)."""
    shares = list(detection_per_video(references, predictions, tiou).values())
    return sum(p for p, _ in shares) / len(shares), sum(r for _, r in shares) / len(shares)


def caption_pairs(references: dict, predictions: dict, tiou: float, rng: random.Random) -> list[tuple]:
    """(video, predicted caption, reference caption) of each video's `match_captions`, non-ASCII characters removed."""
    pairs = []
    for video, (ref_spans, ref_captions) in references.items():
        proposals = [(span, remove_non_ascii(caption)) for span, caption in predictions[video]]
        events = [(span, remove_non_ascii(caption)) for span, caption in zip(ref_spans, ref_captions)]
        pairs += [(video, hyp, ref) for hyp, ref in match_captions(proposals, events, tiou, rng)]
    return pairs


def caption_rows(tokenized_pairs_per_threshold: list[list[tuple]], scorers: CaptionScorers) -> list[dict[str, dict]]:
    """Caption metrics of each video's pairs, at each threshold, from PTB-tokenized (video, hypothesis, reference)
    pairs: ``[{video: metrics}]``. All thresholds' video sets are scored in one call, so that what they share (most
    matched pairs recur at every threshold) is computed once."""
    per_threshold = []
    for pairs in tokenized_pairs_per_threshold:
        per_video: dict[str, tuple[dict, dict]] = {}
        for index, (video, hyp, ref) in enumerate(pairs):
            video_refs, video_hyps = per_video.setdefault(video, ({}, {}))
            video_refs[index], video_hyps[index] = [ref], [hyp]
        per_threshold.append(per_video)
    rows = iter(scorers.score_sets([video_set for per_video in per_threshold for video_set in per_video.values()]))
    return [{video: next(rows) for video in per_video} for per_video in per_threshold]


def caption_scores(tokenized_pairs_per_threshold: list[list[tuple]], scorers: CaptionScorers) -> list[dict]:
    """Caption metrics at each threshold: scored per video, then averaged over videos."""
    return [_mean_over_videos(list(rows.values())) for rows in caption_rows(tokenized_pairs_per_threshold, scorers)]


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


def measure_dense_captioning(
    samples: list[dict], scorers: Callable[[], CaptionScorers], rng: random.Random
) -> tuple[dict, dict]:
    """DVC, SLC: (result, per-sample statistics). Detection F1 (IoU > t, scaled by the parsed share) and caption
    metrics, averaged over thresholds.

    `scorers` returns the (shared) caption scorers; it is called only when some answer parses. `rng` draws the
    stand-in references of unmatched predictions. The statistics (docs/design.md §18) give each video's values to the
    last sample that parsed for it (the one the official keying by video keeps); other samples get zeros.
    """
    references, predictions, failed, carrier = {}, {}, 0, {}
    for position, sample in enumerate(samples):
        spans, captions = parse_dense_captions(sample["a"])
        if spans is None:
            failed += 1
            continue
        if not sample["tgt"] or len(sample["g"]) < len(sample["tgt"]):
            raise ValueError(f"{describe(sample)}: needs at least one event in 'tgt' and a caption in 'g' for each")
        # Keyed by video like the official script: a later sample of the same video replaces an earlier one.
        references[sample["video"]] = (sample["tgt"], sample["g"])
        predictions[sample["video"]] = list(zip(spans, captions))[:MAX_PROPOSALS]
        carrier[sample["video"]] = position
    scale = len(predictions) / len(samples)

    per_threshold = {key: [0] * len(IOU_THRESHOLDS) for key in ("Recall", "Precision", *CAPTION_METRICS)}
    per_video_rows, per_video_detection = [], []
    if references:
        pairs = tokenize_pairs([caption_pairs(references, predictions, tiou, rng) for tiou in IOU_THRESHOLDS])
        per_video_rows = caption_rows(pairs, scorers())
        for i, rows in enumerate(per_video_rows):
            for metric, value in _mean_over_videos(list(rows.values())).items():
                per_threshold[metric][i] = value
        for i, tiou in enumerate(IOU_THRESHOLDS):
            per_video_detection.append(detection_per_video(references, predictions, tiou))
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
    return result, _dense_captioning_columns(len(samples), carrier, per_video_rows, per_video_detection)


def _dense_captioning_columns(count: int, carrier: dict, rows: list[dict], detection: list[dict]) -> dict:
    """Per sample: ``parsed`` (1 for the sample that carries its video), each threshold's detection ``P@t`` / ``R@t``
    and each caption metric averaged over the thresholds (0 for the other samples)."""
    columns = {"parsed": [0.0] * count}
    names = [f"{kind}@{thr}" for thr in IOU_THRESHOLDS for kind in ("P", "R")]
    first = next(iter(rows[0].values()), {}) if rows else {}
    metrics = [metric for metric in CAPTION_METRICS if not first or metric in first]
    columns.update({name: [0.0] * count for name in (*names, *metrics)})
    for video, position in carrier.items():
        columns["parsed"][position] = 1.0
        for thr, shares in zip(IOU_THRESHOLDS, detection):
            columns[f"P@{thr}"][position], columns[f"R@{thr}"][position] = shares[video]
        for metric in metrics:
            columns[metric][position] = float(np.mean([float(per_video[video][metric]) for per_video in rows]))
    return columns


def score_dense_captioning(samples: list[dict], scorers: Callable[[], CaptionScorers], rng: random.Random) -> dict:
    """DVC, SLC scores (`measure_dense_captioning` without the per-sample statistics)."""
    return measure_dense_captioning(samples, scorers, rng)[0]
