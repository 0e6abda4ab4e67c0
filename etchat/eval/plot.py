"""Timeline plots of prediction files: ground-truth and predicted spans, matched times and `<vid>` similarity curves.

    python -m etchat.eval.plot work_dirs/etchat-stage-3/etbench/etbench.json --idx 0 5 --task tvg --output_dir plots \\
        [--data_path data/etbench/videos]

Prediction records -> timelines: ``plot_record`` takes from a record what `etchat.plot.plot_timeline` draws: ``tgt``
or ``span`` for the ground truth, ``pred`` or the spans parsed from ``a`` by the E.T. Bench rules for the prediction,
and the ``sims`` / ``frame_times`` / ``match_times`` that inference writes with ``--save_sims``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
from pathlib import Path

import numpy as np

from etchat.cli import add_old_spelling, setup_logging
from etchat.io import read_jsonl, read_records
from etchat.plot import GT_COLOR, MATCH_COLORS, NUM_THUMBNAILS, PRED_COLOR, plot_timeline

__all__ = ["GT_COLOR", "MATCH_COLORS", "PRED_COLOR", "plot_record", "plot_records", "plot_timeline", "record_spans"]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------------------
# Prediction records
# --------------------------------------------------------------------------------------------------------------------


def flatten_spans(value) -> list[list[float]]:
    """``[s, e]`` pairs in a nested span annotation (one span, a list of spans, per-annotator lists of spans)."""
    if not isinstance(value, (list, tuple)) or not value:
        return []
    if len(value) == 2 and all(isinstance(v, (int, float)) for v in value):
        return [[float(min(value)), float(max(value))]]
    return [span for item in value for span in flatten_spans(item)]


def record_spans(record: dict) -> tuple[list[list[float]], list[list[float]]]:
    """(ground-truth spans, predicted spans) of a prediction record."""
    gt = flatten_spans(record.get("span", record.get("tgt")))
    if "pred" in record:  # Charades-STA: the matched times
        pred = flatten_spans(record["pred"])
    else:
        from etchat.eval.etbench.parsing import parse_spans

        pred = parse_spans(record.get("a") or "") or []
    return gt, pred


def record_title(record: dict) -> str:
    name = "/".join(str(record[k]) for k in ("task", "source", "idx") if k in record) or str(record.get("vid", ""))
    question = record.get("sentence") or record.get("q") or ""
    answer = record.get("error") or record.get("a") or record.get("response") or ""
    return f"{name}  Q: {question}  A: {answer}"


def record_duration(record: dict, gt, pred) -> float:
    if record.get("duration"):
        return float(record["duration"])
    ends = [e for _, e in gt + pred] + list(record.get("frame_times") or []) + list(record.get("match_times") or [])
    return max(ends, default=0.0) + 1.0


def load_thumbnails(video_path: str, duration: float, count: int = NUM_THUMBNAILS) -> list[tuple[float, np.ndarray]]:
    from etchat.data.video import load_video

    clip = load_video(video_path, fps=min(1.0, count / max(duration, 1e-3)))
    picks = np.linspace(0, len(clip.tags) - 1, min(count, len(clip.tags))).round().astype(int)
    return [(clip.tags[i], clip.frames[i].numpy()) for i in picks]


def plot_record(record: dict, out_path: str | os.PathLike, data_path: str | None = None) -> Path:
    """Timeline of one prediction record; thumbnails come from the video when ``data_path`` is given."""
    gt, pred = record_spans(record)
    duration = record_duration(record, gt, pred)
    thumbnails = None
    video = record.get("video") or (f"{record['vid']}.mp4" if "vid" in record else None)
    if data_path and video:
        try:
            thumbnails = load_thumbnails(os.path.join(data_path, video), duration)
        except Exception as error:  # a missing video only costs the thumbnails
            logger.warning("No thumbnails for %s: %s", video, error)
    return plot_timeline(
        duration,
        out_path,
        gt_spans=gt,
        pred_spans=pred,
        times=record.get("match_times") or _number_list(record.get("pred")),
        similarities=record.get("sims"),
        frame_times=record.get("frame_times"),
        thumbnails=thumbnails,
        title=record_title(record),
    )


def _number_list(value) -> list[float] | None:
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return value
    return None


def plot_file_name(record: dict) -> str:
    name = "_".join(str(record[k]) for k in ("task", "source", "idx") if k in record) or str(record.get("vid"))
    return re.sub(r"[^\w.-]+", "_", name) + ".png"


def plot_records(records: list[dict], out_dir: str | os.PathLike, data_path: str | None = None) -> list[Path]:
    paths = [plot_record(r, Path(out_dir) / plot_file_name(r), data_path) for r in records]
    logger.info("Wrote %d plots to %s", len(paths), out_dir)
    return paths


def load_records(path: str | os.PathLike) -> list[dict]:
    """Records of a prediction file (.json list, or a .jsonl journal)."""
    path = Path(path)
    return read_jsonl(path) if path.suffix == ".jsonl" else read_records(path)


def select_records(records: list[dict], idx=None, task=None, source=None) -> list[dict]:
    return [
        r
        for r in records
        if (idx is None or r.get("idx") in idx)
        and (task is None or r.get("task") == task)
        and (source is None or r.get("source") == source)
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.eval.plot", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("pred_path", help="prediction file (.json) or journal (.jsonl)")
    parser.add_argument("--idx", type=int, nargs="+", help="sample idx values to draw (default: the first --limit)")
    parser.add_argument("--task", help="only samples of this task")
    parser.add_argument("--source", help="only samples of this source")
    parser.add_argument("--limit", type=int, default=10, help="at most this many plots")
    parser.add_argument("--data_path", help="video root, for thumbnails")
    parser.add_argument("--output_dir", help="folder for the PNG files (required)")
    add_old_spelling(parser, "--out", "output_dir")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.output_dir:
        parser.error("the following arguments are required: --output_dir")
    return args


def main(argv=None) -> list[Path]:
    args = parse_args(argv)
    setup_logging()
    records = select_records(load_records(args.pred_path), args.idx, args.task, args.source)
    if not records:
        wanted = f"--idx {args.idx} --task {args.task} --source {args.source}"
        raise SystemExit(f"{args.pred_path}: no sample matches {wanted}")
    return plot_records(records[: args.limit], args.output_dir, args.data_path)


if __name__ == "__main__":
    main()
