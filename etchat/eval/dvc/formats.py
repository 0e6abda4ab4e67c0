"""Dense video captioning files (docs/design.md §17): references in the ActivityNet Captions layout (YouCook2's own
layout converted to it), the challenge submission format, and the submission made from E.T. Chat's records.

* ActivityNet Captions (``val_1.json``, ``val_2.json``): ``{video_id: {"duration", "timestamps": [[start, end], ...],
  "sentences": [...]}}``.
* YouCook2 (``youcookii_annotations_trainval.json``): ``{"database": {video_id: {"duration", "subset",
  "annotations": [{"segment": [start, end], "sentence"}, ...]}}}``; its ``validation`` videos are used, converted to
  the ActivityNet layout with the events in file order.
* Submission: ``{"version", "results": {video_id: [{"sentence", "timestamp": [start, end]}, ...]}, "external_data"}``.

Video ids are matched as written (no ``v_`` prefix or extension is added or removed). A broken reference is an
error naming the video; a submission's problems are counted (`SubmissionReport`), never raised.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from etchat.io import is_finite_number, read_json_without_conflicts

STEM = "dvc"  # inference writes <stem>.json / <stem>_<i>.json
YOUCOOK2_SPLIT = "validation"
SUBMISSION_VERSION = "VERSION 1.0"


@dataclass(frozen=True)
class Proposal:
    start: float
    end: float
    sentence: str

    @property
    def segment(self) -> tuple[float, float]:
        return (self.start, self.end)


def read_json(path: str | os.PathLike):
    """A JSON file; a video (any key) written twice with different values is an error naming it."""
    return read_json_without_conflicts(path)[0]


# --------------------------------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------------------------------


def youcook2_to_activitynet(database: dict, subset: str = YOUCOOK2_SPLIT) -> dict:
    """The videos of one YouCook2 subset in the ActivityNet Captions layout."""
    return {
        video: {
            "duration": entry["duration"],
            "timestamps": [annotation["segment"] for annotation in entry["annotations"]],
            "sentences": [annotation["sentence"] for annotation in entry["annotations"]],
        }
        for video, entry in database.items()
        if entry.get("subset") == subset
    }


def check_references(references: dict, source: str) -> dict:
    """``references`` after checking every video: events as [start, end] numbers, one sentence each."""
    if not isinstance(references, dict) or not references:
        raise ValueError(f"{source}: expected a non-empty object of videos")
    for video, entry in references.items():
        where = f"{source}: video {video!r}"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: expected an object with 'timestamps' and 'sentences'")
        stamps, sentences = entry.get("timestamps"), entry.get("sentences")
        if not isinstance(stamps, list) or not stamps or not isinstance(sentences, list):
            raise ValueError(f"{where}: needs a non-empty 'timestamps' list and a 'sentences' list")
        if len(stamps) != len(sentences) or not all(isinstance(s, str) for s in sentences):
            raise ValueError(f"{where}: {len(stamps)} timestamps but {len(sentences)} sentences")
        for stamp in stamps:
            if not isinstance(stamp, list) or len(stamp) != 2 or not all(map(is_finite_number, stamp)):
                raise ValueError(f"{where}: bad event timestamp {stamp!r} (expected [start, end])")
    return references


def load_references(path: str | os.PathLike, data=None) -> dict:
    """One reference file (ActivityNet Captions layout, or YouCook2's ``database`` layout) as ``{video: entry}``;
    ``data`` is its content when already read."""
    data = read_json(path) if data is None else data
    if isinstance(data, dict) and isinstance(data.get("database"), dict):
        data = youcook2_to_activitynet(data["database"])
        if not data:
            raise ValueError(f"{path}: no YouCook2 video of the '{YOUCOOK2_SPLIT}' subset")
    return check_references(data, str(path))


# --------------------------------------------------------------------------------------------------------------------
# Submissions
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class SubmissionReport:
    """What was wrong with a submission, in numbers (all 0 for a clean one)."""

    videos: int = 0  # reference videos scored
    missing_predictions: int = 0  # reference videos absent from the submission: 0 in every score
    no_proposals: int = 0  # videos with an empty list (e.g. an answer that did not parse): 0 in every score
    unknown_videos: int = 0  # submitted videos in no reference file: ignored
    malformed_proposals: int = 0  # entries that are not {"sentence": text, "timestamp": [start, end]}: dropped
    reversed_proposals: int = 0  # end < start: kept, overlap 0
    proposals_outside_video: int = 0  # start < 0 or end > duration: kept as written
    proposals_beyond_limit: int = 0  # proposals after the first max_proposals: not in the caption / P-R scores
    inference_errors: int = 0  # inference records with an `error` (their videos have no proposal)
    missing_videos: list = field(default_factory=list)

    def lost(self) -> bool:
        """Whether videos were lost (not answered at all): the scores are then only a lower bound."""
        return self.missing_predictions > 0 or self.inference_errors > 0

    def counts(self) -> dict[str, int]:
        return {key: value for key, value in asdict(self).items() if key != "missing_videos"}

    def problems(self) -> dict[str, int]:
        return {key: value for key, value in self.counts().items() if value and key != "videos"}


def _proposal(entry, duration, report: SubmissionReport) -> Proposal | None:
    stamp = entry.get("timestamp") if isinstance(entry, dict) else None
    sentence = entry.get("sentence") if isinstance(entry, dict) else None
    stamp_ok = isinstance(stamp, list) and len(stamp) == 2 and all(map(is_finite_number, stamp))
    if not isinstance(sentence, str) or not stamp_ok:
        report.malformed_proposals += 1
        return None
    start, end = float(stamp[0]), float(stamp[1])
    report.reversed_proposals += end < start
    report.proposals_outside_video += is_finite_number(duration) and (start < 0 or end > duration)
    return Proposal(start, end, sentence)


def parse_submission(submission, references: list[dict], source: str, max_proposals: int):
    """video -> proposals (in submitted order) for the reference videos, and the report of what was wrong."""
    if not isinstance(submission, dict) or not isinstance(submission.get("results"), dict):
        raise ValueError(f"{source}: expected a submission object with 'results': {{video: [proposals]}}")
    results = submission["results"]
    videos = reference_videos(references)
    durations = {video: ref[video].get("duration") for ref in references for video in ref}
    report = SubmissionReport(videos=len(videos), unknown_videos=sum(video not in durations for video in results))
    proposals = {}
    for video in videos:
        entries = results.get(video)
        if entries is None:
            report.missing_predictions += 1
            report.missing_videos.append(video)
            continue
        entries = entries if isinstance(entries, list) else [entries]
        kept = [p for p in (_proposal(e, durations[video], report) for e in entries) if p is not None]
        report.no_proposals += not kept
        report.proposals_beyond_limit += max(0, len(kept) - max_proposals)
        proposals[video] = kept
    return proposals, report


def reference_videos(references: list[dict]) -> list[str]:
    """Every video of the reference files, each once, in first-seen order."""
    return list(dict.fromkeys(video for ref in references for video in ref))


# --------------------------------------------------------------------------------------------------------------------
# E.T. Chat's inference records -> submission and references
# --------------------------------------------------------------------------------------------------------------------


def submission_from_records(records: list[dict]) -> tuple[dict, dict]:
    """The challenge submission of the records' proposals, and the references the records carry."""
    results = {record["video_id"]: record.get("proposals") or [] for record in records}
    references = {
        record["video_id"]: {name: record[name] for name in ("duration", "timestamps", "sentences")}
        for record in records
    }
    submission = {
        "version": SUBMISSION_VERSION,
        "results": results,
        "external_data": {"used": False, "details": "E.T. Chat answers, parsed by etchat.eval.dvc"},
    }
    return submission, references
