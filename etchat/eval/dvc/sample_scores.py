"""Dense captioning's per-video statistics (`etchat.eval.sample_scores`, docs/design.md §18): one stratum, each
reference video its own cluster; the caption scores and SODA_c as means over videos and F1 from the means of
precision and recall, as the scorer computes them; the parse audit of the answers."""

from __future__ import annotations

from pathlib import Path

from etchat.eval.dvc.formats import STEM
from etchat.eval.dvc.metrics import CAPTION_SCORES
from etchat.eval.results import final_files
from etchat.eval.sample_scores import AuditGroup, SampleScores, Stratum
from etchat.io import read_records

BENCHMARK = "dvc"
STRATUM = "dvc"
RULES = (
    "ActivityNet densevid_eval and SODA definitions (docs/design.md §17): caption metrics per video at tIoU 0.3 / "
    "0.5 / 0.7 / 0.9, averaged over all reference videos; F1 of the mean precision and recall; a video without "
    "proposals scores 0 and stays in every mean (SODA_c included)"
)


def _responses(pred_path) -> dict:
    """video -> answer text, from inference records (a submission file has none)."""
    try:
        records = [record for file in final_files(Path(pred_path), STEM) for record in read_records(file)]
    except (FileNotFoundError, ValueError):  # a submission file (an object, not records), or a name in a test
        return {}
    return {record.get("video_id"): record.get("response") for record in records}


def dvc_sample_scores(per_video: dict, videos: list[str], proposals: dict, pred_path) -> SampleScores:
    """The statistics of a scored submission: ``per_video`` as `metrics.measure_dense_captioning` returns it for
    ``videos``, ``proposals`` as the submission gave them (for the audit)."""
    metrics = {name: ["unit_mean", STRATUM, name] for name in (*CAPTION_SCORES, "SODA_c", "Precision", "Recall")}
    metrics["F1"] = ["f1", metrics["Precision"], metrics["Recall"]]
    audit, responses = AuditGroup(), _responses(pred_path)
    for video in videos:
        kind = "no prediction" if video not in proposals else None if proposals[video] else "no timed caption"
        audit.add(video, kind, responses.get(video))
    strata = {STRATUM: Stratum(list(videos), list(videos), dict(per_video))}
    return SampleScores(BENCHMARK, strata, metrics, {"captions": audit}, {"rules": RULES})
