"""Timeline plots: bars, curves and thumbnails land where their times say; records give the right spans."""

import json

import numpy as np
import pytest
from PIL import Image

from etchat.eval import plot
from etchat.eval.plot import record_spans
from etchat.plot import plot_timeline


def rgb(hex_color: str) -> np.ndarray:
    return np.array([int(hex_color[i : i + 2], 16) for i in (1, 3, 5)], dtype=float)


def pixels_of(image: np.ndarray, color: np.ndarray, tol: float = 4) -> tuple[np.ndarray, np.ndarray]:
    """(rows, columns) of the pixels within ``tol`` of ``color``."""
    return np.nonzero(np.abs(image[..., :3].astype(float) - color).max(-1) <= tol)


def runs(columns: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous [first, last] runs of sorted unique column indices."""
    columns = np.unique(columns)
    breaks = np.nonzero(np.diff(columns) > 1)[0]
    starts = np.r_[columns[0], columns[breaks + 1]]
    ends = np.r_[columns[breaks], columns[-1]]
    return list(zip(starts.tolist(), ends.tolist()))


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_span_bars_are_drawn_to_scale(tmp_path):
    path = plot_timeline(100.0, tmp_path / "t.png", gt_spans=[[10, 20], [60, 80]], pred_spans=[[30, 40]])
    image = read(path)
    rows, columns = pixels_of(image, rgb(plot.GT_COLOR))
    (l1, r1), (l2, r2) = runs(columns)
    # Pixel x is linear in time: fit it on the two left edges, then the right edges must follow.
    scale = (l2 - l1) / 50
    offset = l1 - 10 * scale
    assert r1 == pytest.approx(offset + 20 * scale, abs=2)
    assert r2 == pytest.approx(offset + 80 * scale, abs=2)
    pred_rows, pred_columns = pixels_of(image, rgb(plot.PRED_COLOR))
    ((p1, p2),) = runs(pred_columns)
    assert (p1, p2) == (pytest.approx(offset + 30 * scale, abs=2), pytest.approx(offset + 40 * scale, abs=2))
    assert pred_rows.min() > rows.max()  # the prediction lane is under the ground-truth lane


def test_similarity_curve_peaks_at_its_frame_time(tmp_path):
    frame_times = np.arange(0, 100, 2.0)  # 0.5 fps: the curve's x values are these times, not frame numbers
    curve = np.exp(-0.5 * ((frame_times - 30) / 4) ** 2)
    curve /= curve.sum()
    path = plot_timeline(
        100.0, tmp_path / "s.png", gt_spans=[[10, 20], [60, 80]], similarities=[curve], frame_times=frame_times
    )
    image = read(path)
    _, columns = pixels_of(image, rgb(plot.GT_COLOR))
    (l1, _), (l2, _) = runs(columns)
    scale = (l2 - l1) / 50
    offset = l1 - 10 * scale
    rows, columns = pixels_of(image, rgb(plot.MATCH_COLORS[0]), tol=10)
    left = columns < offset + 60 * scale  # the legend (upper right) uses the same colour
    top = rows[left].argmin()
    assert columns[left][top] == pytest.approx(offset + 30 * scale, abs=3)


def test_thumbnails_are_shown_in_time_order(tmp_path):
    red = np.zeros((20, 30, 3), np.uint8)
    red[..., 0] = 255
    blue = np.zeros((20, 30, 3), np.uint8)
    blue[..., 2] = 255
    path = plot_timeline(60.0, tmp_path / "th.png", gt_spans=[[0, 60]], thumbnails=[(45.0, blue), (5.0, red)])
    image = read(path)
    red_rows, red_columns = pixels_of(image, np.array([255, 0, 0]), tol=10)
    blue_rows, blue_columns = pixels_of(image, np.array([0, 0, 255]), tol=10)
    gt_rows, _ = pixels_of(image, rgb(plot.GT_COLOR))
    assert red_columns.size > 100 and blue_columns.size > 100
    assert red_columns.max() < blue_columns.min()
    assert max(red_rows.max(), blue_rows.max()) < gt_rows.min()  # above the timeline


def test_bad_inputs_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="positive duration"):
        plot_timeline(0, tmp_path / "x.png")
    with pytest.raises(ValueError, match="3 values but there are 2 frame times"):
        plot_timeline(5.0, tmp_path / "x.png", similarities=[[0.2, 0.3, 0.5]], frame_times=[0.0, 1.0])


def test_record_spans():
    vhd = {"task": "vhd", "tgt": [[[56, 76], [78, 80]], [[60, 64]]], "a": "The highlight happens in 62 - 60 s."}
    assert record_spans(vhd) == ([[56, 76], [78, 80], [60, 64]], [[60.0, 62.0]])
    tvg = {"task": "tvg", "tgt": [1, 3], "a": "no time here"}
    assert record_spans(tvg) == ([[1.0, 3.0]], [])
    charades = {"vid": "x", "span": [2.0, 5.0], "pred": [6.0, 4.0], "response": "4 - 6"}
    assert record_spans(charades) == ([[2.0, 5.0]], [[4.0, 6.0]])
    assert record_spans({"span": [2.0, 5.0], "pred": [4.0]}) == ([[2.0, 5.0]], [])


def test_cli_draws_the_chosen_samples(tmp_path):
    records = [
        {"idx": 0, "task": "tvg", "source": "charades_sta", "duration": 30.0, "tgt": [[1, 3]], "q": "q0", "a": "1 - 2"},
        {"idx": 1, "task": "tvg", "source": "charades_sta", "duration": 30.0, "tgt": [[5, 9]], "q": "q1", "a": "6 - 9",
         "sims": [[0.1, 0.7, 0.2]], "frame_times": [0.0, 1.0, 2.0], "match_times": [1.0]},
        {"idx": 1, "task": "vhd", "source": "qvhighlights", "duration": 30.0, "tgt": [[[5, 9]]], "q": "q", "a": "7"},
    ]  # fmt: skip
    pred = tmp_path / "etbench.json"
    pred.write_text(json.dumps(records))
    paths = plot.main([str(pred), "--idx", "1", "--task", "tvg", "--output_dir", str(tmp_path / "plots")])
    assert [p.name for p in paths] == ["tvg_charades_sta_1.png"]
    assert Image.open(paths[0]).size[0] == 1200  # 12 in at 100 dpi
    with pytest.raises(SystemExit, match="no sample matches"):
        plot.main([str(pred), "--idx", "7", "--output_dir", str(tmp_path / "none")])


def test_dollar_signs_in_an_answer_are_drawn_as_text(tmp_path):
    # An untrained model's answer such as "your$ <start" once stopped inference: matplotlib read it as a formula.
    answer = "your$ <startGat rin yourvi <vidncriow P`~ sentence:3 up. chooseoured*u$ *"
    record = {"idx": 0, "task": "tvg", "source": "s", "duration": 10.0, "tgt": [[1, 3]], "q": "q", "a": answer}
    (path,) = plot.plot_records([record], tmp_path)
    assert path.is_file()
