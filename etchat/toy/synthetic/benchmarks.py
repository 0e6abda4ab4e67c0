"""The synthetic test split in the formats of the QVHighlights and dense-captioning benchmarks (docs/design.md §16,
§17), so that the quickstart scores them like the real data sets.

* QVHighlights (Moment-DETR ``.jsonl``): one query per test video, the caption of one of its events; the relevant
  window is the event's span, and every 2-second clip showing the event is rated by three annotators, highest in
  the middle of the span (where the stage-3 highlight answers point) and lowest at its ends.
* Dense captioning (ActivityNet Captions layout): every test video with all its events and their captions.

Video ids are the file stems (``test_00000``); the videos are ``<out>/videos/test/<id>.mp4``.
"""

from __future__ import annotations

from pathlib import Path

from etchat.eval.qvhighlights.metrics import CLIP_SECONDS, num_clips
from etchat.toy.synthetic.scenes import Event, VideoSpec

QVHIGHLIGHTS_ANNOTATION = "annotations/qvhighlights/synthetic_test.jsonl"
DVC_ANNOTATION = "annotations/dvc/synthetic_test.json"
TEST_VIDEO_FOLDER = "videos/test"
# The three annotators: one rates as drawn, one is stricter, one more lenient.
ANNOTATOR_OFFSETS = (0.0, -0.75, 0.75)


def video_id(spec: VideoSpec) -> str:
    return Path(spec.name).stem


def clip_ratings(event: Event, duration: int) -> tuple[list[int], list[list[int]]]:
    """(clip ids, three 1-4 ratings each) of the 2-second clips in which ``event`` is on screen."""
    clips, ratings = [], []
    for clip in range(num_clips(duration)):
        seconds = [t for t in range(clip * CLIP_SECONDS, (clip + 1) * CLIP_SECONDS) if event.is_visible(t)]
        if not seconds:
            continue
        centrality = 1 - abs(2 * event.progress(sum(seconds) / len(seconds)) - 1)  # 1 mid-span, 0 at its ends
        clips.append(clip)
        ratings.append([min(4, max(1, round(4 * centrality + offset))) for offset in ANNOTATOR_OFFSETS])
    return clips, ratings


def qvhighlights_line(spec: VideoSpec, rng, qid: int) -> dict:
    """One QVHighlights query about a randomly chosen event of the video."""
    event = spec.events[int(rng.integers(len(spec.events)))]
    clips, ratings = clip_ratings(event, spec.duration)
    return {
        "qid": qid,
        "query": event.caption,
        "vid": video_id(spec),
        "duration": float(spec.duration),
        "relevant_windows": [[event.start, event.end]],
        "relevant_clip_ids": clips,
        "saliency_scores": ratings,
    }


def dense_caption_references(specs: list[VideoSpec]) -> dict:
    """Every video's events in the ActivityNet Captions layout."""
    return {
        video_id(spec): {
            "duration": float(spec.duration),
            "timestamps": [[event.start, event.end] for event in spec.events],
            "sentences": [event.caption for event in spec.events],
        }
        for spec in specs
    }
