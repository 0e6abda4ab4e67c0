"""Dense video captioning scores, written from the definitions of the official ActivityNet dense-captioning
evaluation (``densevid_eval``: caption metrics and event localisation over tIoU 0.3 / 0.5 / 0.7 / 0.9) and of SODA
(``soda.py``: SODA_c), docs/design.md §17.

* Segment overlap: `caption_iou` (union + 1e-8, so an IoU of exactly t counts below t; reversed segments overlap
  nothing).
* Captions, at each threshold t: every proposal (the first `MAX_PROPOSALS` of a video, in submitted order) is paired
  with every reference event, of every reference file, that it overlaps at IoU >= t, or else with a random string;
  texts lose their non-ASCII characters and are PTB-tokenized; BLEU-1..4, METEOR, ROUGE-L and CIDEr are computed on
  each video's pairs alone, then averaged over all reference videos; the final value is the mean over thresholds.
* Localisation, at each t: per video and reference file, recall = share of events some proposal overlaps at IoU > t
  and precision = share of proposals overlapping some event at IoU > t; a video keeps its best recall and, apart,
  its best precision over the files; both are averaged over videos, then over thresholds. F1 = 2PR / (P + R) of
  those final P and R (the official code has no F1).
* SODA_c: per video, proposals and the events of all reference files are each sorted by start time; the
  order-preserving one-to-one matching maximising the sum of IoU x METEOR (the event sentence scored as the METEOR
  hypothesis against the proposal) gives p = sum / proposals, r = sum / events, and SODA_c is the mean over videos of
  2pr / (p + r).

A reference video without proposals scores 0 everywhere and stays in every mean. The official caption metrics do the
same; official SODA skips such videos (and crashes on an empty proposal list), so here SODA_c is lower than the
official one by the share of such videos, and equal when every video has proposals.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from etchat.eval.dvc.formats import Proposal
from etchat.eval.metrics.captions import (
    CaptionScorers,
    caption_iou,
    count_covered,
    match_captions,
    ptb_tokenize,
    remove_non_ascii,
)

TIOUS = (0.3, 0.5, 0.7, 0.9)
MAX_PROPOSALS = 1000
CAPTION_SCORES = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
DETECTION_SCORES = ("Precision", "Recall")


def tokenizer_for(texts) -> dict[str, str]:
    """text -> its PTB tokens (non-ASCII characters replaced by spaces first), from one tokenizer call."""
    unique = list(dict.fromkeys(texts))
    return dict(zip(unique, ptb_tokenize([remove_non_ascii(text) for text in unique])))


def events_of(references: list[dict], video: str) -> list[tuple[list, list]]:
    """(timestamps, sentences) of ``video`` in each reference file that has it."""
    return [(ref[video]["timestamps"], ref[video]["sentences"]) for ref in references if video in ref]


# --------------------------------------------------------------------------------------------------------------------
# Captions at one threshold
# --------------------------------------------------------------------------------------------------------------------


def caption_pairs(proposals: Sequence[Proposal], events: list[tuple[list, list]], tiou: float, rng: random.Random):
    """`match_captions` of one video's proposals against the events of all its reference files, in file order."""
    flat_events = [(stamp, sentence) for stamps, sentences in events for stamp, sentence in zip(stamps, sentences)]
    return match_captions([(p.segment, p.sentence) for p in proposals], flat_events, tiou, rng)


def caption_set(pairs, tokens: dict[str, str]):
    """pycocoevalcap's (references, hypotheses) of one video's tokenized pairs."""
    hyps = {i: [tokens[hyp]] for i, (hyp, _) in enumerate(pairs)}
    refs = {i: [tokens[ref]] for i, (_, ref) in enumerate(pairs)}
    return refs, hyps


def video_caption_scores(proposals: dict, references: list[dict], videos: list[str], scorers, seed: int = 0) -> dict:
    """Per threshold, each of ``videos``' caption scores (None for a video without proposals). All videos and
    thresholds are scored in one `CaptionScorers.score_sets` call, so a set that recurs is scored once."""
    rng = random.Random(seed)
    pairs = {
        tiou: {video: caption_pairs(proposals[video], events_of(references, video), tiou, rng) for video in videos
               if proposals.get(video)}
        for tiou in TIOUS
    }  # fmt: skip
    tokens = tokenizer_for(text for by_video in pairs.values() for ps in by_video.values() for p in ps for text in p)
    keys = [(tiou, video) for tiou, by_video in pairs.items() for video in by_video]
    scored = dict(zip(keys, scorers.score_sets([caption_set(pairs[t][v], tokens) for t, v in keys])))
    return {tiou: [scored.get((tiou, video)) for video in videos] for tiou in pairs}


def caption_scores(proposals: dict, references: list[dict], videos: list[str], scorers, seed: int = 0) -> dict:
    """Per threshold, the caption scores averaged over ``videos`` (a video without proposals scores 0)."""
    return _mean_caption_scores(video_caption_scores(proposals, references, videos, scorers, seed))


def _mean_caption_scores(rows_per_tiou: dict) -> dict:
    return {
        tiou: {name: _mean([0.0 if row is None else float(row[name]) for row in rows]) for name in CAPTION_SCORES}
        for tiou, rows in rows_per_tiou.items()
    }


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


# --------------------------------------------------------------------------------------------------------------------
# Event localisation
# --------------------------------------------------------------------------------------------------------------------


def video_precision_recall(proposals: Sequence[Proposal], events: list[tuple[list, list]], tiou: float):
    """(best precision, best recall) of one video over its reference files, at IoU > tiou."""
    best_precision = best_recall = 0.0
    segments = [proposal.segment for proposal in proposals]
    for stamps, _ in events:
        covered_proposals, covered_events = count_covered(segments, stamps, tiou)
        best_recall = max(best_recall, covered_events / len(stamps))
        if proposals:
            best_precision = max(best_precision, covered_proposals / len(proposals))
    return best_precision, best_recall


def video_precision_recalls(proposals: dict, references: list[dict], videos: list[str]) -> dict:
    """Per threshold, each of ``videos``' (best precision, best recall)."""
    return {
        tiou: [video_precision_recall(proposals.get(v, []), events_of(references, v), tiou) for v in videos]
        for tiou in TIOUS
    }


def precision_recall(proposals: dict, references: list[dict], videos: list[str]) -> dict:
    """Per threshold, precision and recall averaged over ``videos``."""
    return _mean_precision_recall(video_precision_recalls(proposals, references, videos))


def _mean_precision_recall(rows_per_tiou: dict) -> dict:
    return {
        tiou: {"Precision": _mean([p for p, _ in rows]), "Recall": _mean([r for _, r in rows])}
        for tiou, rows in rows_per_tiou.items()
    }


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


# --------------------------------------------------------------------------------------------------------------------
# SODA_c
# --------------------------------------------------------------------------------------------------------------------


def ordered_matching_score(weights: np.ndarray) -> float:
    """The largest sum of weights[i, j] over one-to-one pairs (i, j) increasing in both i and j."""
    rows, cols = weights.shape
    best = np.zeros((rows + 1, cols + 1))
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            best[i, j] = max(best[i - 1, j], best[i, j - 1], best[i - 1, j - 1] + weights[i - 1, j - 1])
    return float(best[rows, cols])


def merged_events(references: list[dict], video: str) -> list[tuple[list, str]]:
    """The events of every reference file of ``video``, in file order, then sorted by start time."""
    events = [(stamp, sentence) for stamps, sentences in events_of(references, video) for stamp, sentence in
              zip(stamps, sentences)]  # fmt: skip
    return sorted(events, key=lambda event: event[0][0])


def video_soda_c(proposals: Sequence[Proposal], events: list[tuple[list, str]], tokens, scorers) -> float:
    ordered = sorted(proposals, key=lambda proposal: proposal.start)
    pairs = [(event, proposal) for event in events for proposal in ordered]
    # SODA scores the event sentence as the METEOR hypothesis and the proposal as its reference.
    hyps = {k: [tokens[event[1]]] for k, (event, _) in enumerate(pairs)}
    refs = {k: [tokens[proposal.sentence]] for k, (_, proposal) in enumerate(pairs)}
    meteor = np.array(scorers.meteor_segments(refs, hyps)).reshape(len(events), len(ordered))
    overlap = np.array([[caption_iou(p.segment, event[0]) for p in ordered] for event in events])
    score = ordered_matching_score(overlap * meteor)
    return f1(score / len(ordered), score / len(events))


def video_soda_scores(proposals: dict, references: list[dict], videos: list[str], scorers: CaptionScorers) -> list:
    """Each of ``videos``' SODA_c (0 for a video without proposals)."""
    events = {video: merged_events(references, video) for video in videos}
    tokens = tokenizer_for(
        [p.sentence for v in videos for p in proposals.get(v, [])] + [e[1] for v in videos for e in events[v]]
    )
    return [video_soda_c(proposals[v], events[v], tokens, scorers) if proposals.get(v) else 0.0 for v in videos]


def soda_c(proposals: dict, references: list[dict], videos: list[str], scorers: CaptionScorers) -> float:
    """SODA_c averaged over ``videos`` (a video without proposals scores 0)."""
    return _mean(video_soda_scores(proposals, references, videos, scorers))


# --------------------------------------------------------------------------------------------------------------------
# Everything together
# --------------------------------------------------------------------------------------------------------------------


def dense_captioning_scores(
    proposals: dict,
    references: list[dict],
    videos: list[str],
    scorers: CaptionScorers,
    max_proposals: int = MAX_PROPOSALS,
) -> dict:
    """Caption scores, precision, recall, F1 (averaged over the thresholds) and SODA_c, plus the per-threshold
    table; values in 0-1 (CIDEr can exceed 1)."""
    return measure_dense_captioning(proposals, references, videos, scorers, max_proposals)[0]


def measure_dense_captioning(
    proposals: dict,
    references: list[dict],
    videos: list[str],
    scorers: CaptionScorers,
    max_proposals: int = MAX_PROPOSALS,
) -> tuple[dict, dict[str, list[float]]]:
    """`dense_captioning_scores` and the per-video values behind them (docs/design.md §18): for each of ``videos``,
    every caption score and precision and recall averaged over the thresholds, and SODA_c."""
    kept = {video: items[:max_proposals] for video, items in proposals.items()}
    caption_rows = video_caption_scores(kept, references, videos, scorers)
    detection_rows = video_precision_recalls(kept, references, videos)
    soda_scores = video_soda_scores(proposals, references, videos, scorers)
    per_tiou = _mean_caption_scores(caption_rows)
    for tiou, values in _mean_precision_recall(detection_rows).items():
        per_tiou[tiou].update(values)
    names = (*CAPTION_SCORES, *DETECTION_SCORES)
    result = {name: _mean([per_tiou[tiou][name] for tiou in TIOUS]) for name in names}
    result["F1"] = f1(result["Precision"], result["Recall"])
    result["SODA_c"] = _mean(soda_scores)
    result["per_tiou"] = {str(tiou): per_tiou[tiou] for tiou in TIOUS}

    per_video = {
        name: [_mean([0.0 if rows[i] is None else float(rows[i][name]) for rows in caption_rows.values()])
               for i in range(len(videos))]
        for name in CAPTION_SCORES
    }  # fmt: skip
    for k, name in enumerate(DETECTION_SCORES):
        per_video[name] = [_mean([rows[i][k] for rows in detection_rows.values()]) for i in range(len(videos))]
    per_video["SODA_c"] = list(soda_scores)
    return result, per_video
