"""Timeline plots of a video answer, from plain values: ground-truth and predicted spans, matched `<vid>` times,
similarity curves over the frames and thumbnails.

The chat and demo (`etchat.serve`) draw an answer with it, and `etchat.eval.plot` draws prediction records with it;
it knows nothing of benchmarks or prediction files, so both can use it without depending on each other. Figures are
drawn with the Agg canvas directly, so importing this module leaves pyplot's backend alone.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator

from etchat.data.tokenization import format_seconds

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
