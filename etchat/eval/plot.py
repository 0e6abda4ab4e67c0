"""Timeline plots of video answers: ground-truth and predicted spans, matched times and `<vid>` similarity curves.

    python -m etchat.eval.plot work_dirs/etchat-stage-3/etbench/etbench.json --idx 0 5 --task tvg --output_dir plots \\
        [--data_path data/etbench/videos]

``plot_timeline`` draws one figure from plain values and is what the chat CLI calls; ``plot_record`` derives those
values from a prediction record (``tgt`` or ``span`` for the ground truth, ``pred`` or the spans parsed from ``a`` by
the E.T. Bench rules for the prediction, and the ``sims`` / ``frame_times`` / ``match_times`` that inference writes
with ``--save_sims``). Figures are drawn with the Agg canvas directly, so importing this module leaves pyplot's
backend alone.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from etchat.cli import add_old_spelling, setup_logging
from etchat.data.tokenization import format_seconds
from etchat.io import read_jsonl, read_records

logger = logging.getLogger(__name__)

GT_COLOR = "#2ca02c"
PRED_COLOR = "#ff7f0e"
# One colour per `<vid>` token, shared by its matched-time marker and its similarity curve.
MATCH_COLORS = ("#1f77b4", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
NUM_THUMBNAILS = 8


def plot_timeline(
    duration: float,
    out_path: str | os.PathLike,
    gt_spans: Sequence[Sequence[float]] | None = None,
    pred_spans: Sequence[Sequence[float]] | None = None,
    times: Sequence[float] | None = None,
    similarities: Sequence[Sequence[float]] | None = None,
    frame_times: Sequence[float] | None = None,
    thumbnails: Sequence[tuple[float, np.ndarray]] | None = None,
    title: str | None = None,
) -> Path:
    """Draw a video timeline as a PNG at ``out_path`` and return the path.

    duration: video length in seconds (the x range). gt_spans / pred_spans: ``[start, end]`` seconds, drawn as bars on
    a ground-truth and a prediction lane. times: matched `<vid>` times, drawn as markers. similarities: one curve per
    `<vid>` token over the frames, at ``frame_times`` (default: frame ``i`` at ``i`` seconds). thumbnails:
    ``(time, uint8 HxWx3 image)`` pairs shown above the timeline. title: text on top (wrapped).
    """
    if not duration or duration <= 0:
        raise ValueError(f"plot_timeline needs a positive duration, got {duration!r}")
    similarities = [np.asarray(s, dtype=float) for s in similarities or []]
    heights = [1.3] * bool(thumbnails) + [1.2] + [2.2] * bool(similarities)
    figure = Figure(figsize=(12, sum(heights) + (0.9 if title else 0.5)), layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(len(heights), 1, sharex=True, height_ratios=heights, squeeze=False)[:, 0])
    if thumbnails:
        _draw_thumbnails(axes.pop(0), thumbnails, duration)
    spans_axis = axes.pop(0)
    _draw_spans(spans_axis, gt_spans or [], pred_spans or [], times or [])
    if similarities:
        _draw_similarities(axes.pop(0), similarities, frame_times, times or [])
    bottom = figure.axes[-1]
    bottom.set_xlim(0, duration)
    bottom.xaxis.set_major_locator(MaxNLocator(nbins=12, steps=[1, 2, 5, 10]))
    bottom.xaxis.set_major_formatter(FuncFormatter(lambda x, _: format_seconds(x)))
    bottom.set_xlabel("time (mm:ss)")
    if title:
        # Titles hold model answers: a "$" there is text, not the start of a formula.
        figure.suptitle("\n".join(textwrap.wrap(title, 140)[:3]), fontsize=10, ha="left", x=0.01, parse_math=False)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out_path, dpi=100)
    return out_path


def _draw_thumbnails(axis, thumbnails, duration: float) -> None:
    # Equal slots in time order (not centred on their times, which would overlap at the ends), each labelled.
    slot = duration / len(thumbnails)
    for k, (time, image) in enumerate(sorted(thumbnails, key=lambda item: item[0])):
        left, right = k * slot + 0.03 * slot, (k + 1) * slot - 0.03 * slot
        axis.imshow(np.asarray(image), extent=(left, right, 0, 1), aspect="auto")
        axis.text(
            (left + right) / 2,
            0.04,
            format_seconds(time),
            ha="center",
            va="bottom",
            fontsize=7,
            color="white",
            bbox=dict(facecolor="black", alpha=0.5, pad=1, linewidth=0),
        )
    axis.set_ylim(0, 1)
    axis.set_yticks([])
    axis.set_ylabel("frames", rotation=0, ha="right", va="center")


def _draw_spans(axis, gt_spans, pred_spans, times) -> None:
    lanes = {"ground truth": (1, gt_spans, GT_COLOR), "prediction": (0, pred_spans, PRED_COLOR)}
    for label, (lane, spans, color) in lanes.items():
        bars = [(start, max(end - start, 0.0)) for start, end in spans]
        axis.broken_barh(bars, (lane - 0.3, 0.6), facecolors=color, edgecolor="black", linewidth=0.5)
        if not spans and label == "prediction" and not times:
            axis.text(0.5, lane, "no span parsed", transform=axis.get_yaxis_transform(), ha="center", va="center")
    for k, time in enumerate(times):
        color = MATCH_COLORS[k % len(MATCH_COLORS)]
        axis.axvline(time, color=color, linestyle="--", linewidth=1)
        axis.plot([time], [0], marker="v", markersize=9, color=color, zorder=3)
    axis.set_ylim(-0.7, 1.7)
    axis.set_yticks([0, 1], ["prediction", "ground truth"])
    axis.set_axisbelow(True)  # grid lines behind the bars
    axis.grid(axis="x", alpha=0.3)


def _draw_similarities(axis, similarities, frame_times, times) -> None:
    for k, curve in enumerate(similarities):
        color = MATCH_COLORS[k % len(MATCH_COLORS)]
        x = np.asarray(frame_times, dtype=float) if frame_times is not None else np.arange(len(curve), dtype=float)
        if len(x) != len(curve):
            raise ValueError(f"similarity curve {k} has {len(curve)} values but there are {len(x)} frame times")
        label = f"<vid> {k + 1}" + (f" -> {format_seconds(times[k])}" if k < len(times) else "")
        axis.plot(x, curve, color=color, linewidth=1.2, label=label)
        best = int(np.argmax(curve))
        axis.plot([x[best]], [curve[best]], marker="o", color=color)
    axis.set_ylabel("similarity")
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
    axis.legend(loc="upper right", fontsize=8, ncols=min(len(similarities), 4))


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
