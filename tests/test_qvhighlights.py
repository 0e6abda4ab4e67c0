"""QVHighlights scoring against the official Moment-DETR evaluation.

The cases in tests/data/qvhighlights/ were made outside this repository with the official evaluation code
(`standalone_eval/eval.py` and `utils.py` of jayleicn/moment_detr at commit b7e553ac3b0c898ee6b85e03ee507c064eab89ca,
unmodified; Python 3.11.7, numpy 2.4.6, scikit-learn 1.9.1; an x86_64 machine with AVX2):

* ``<case>/gt.jsonl``, ``pred.jsonl``: written by a seeded generator (random cases) or by hand (edge cases);
* ``<case>/expected_metrics.json``: what the official ``eval_main`` writes for them, i.e.
  ``json.dumps(eval_submission(load_jsonl(pred), load_jsonl(gt), match_number=True), indent=4)`` (``match_number``
  False for ``match_number_false``); ``expected_raw.json`` holds the same values before the 2-decimal rounding;
* ``degenerate_windows/expected_metrics_reversed_as_far.json``: the official output for the case's predictions with
  each reversed window replaced by ``[1000000.0, 1000001.0, score]`` (a window that overlaps nothing), which is how
  this scorer treats a reversed window;
* ``duplicate_qid/expected_metrics_last_line.json``: the official output with only the last line of the duplicated
  qid kept, which is how this scorer treats duplicates;
* ``crash_empty_bucket/expected_tables.json``: the official code crashes on an empty length bucket; these are the
  official ``compute_mr_ap`` / ``compute_mr_r1`` tables of the other buckets and ``eval_highlight``'s tables.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from etchat.eval.qvhighlights import evaluate, formats, infer, metrics, prompts
from etchat.io import read_records

CASES = Path(__file__).parent / "data" / "qvhighlights"
OFFICIAL_CASES = [
    "etchat_ties",
    "hl_edges",
    "iou_at_threshold",
    "gt_iou_tie",
    "int_windows_ties",
    "short_videos",
    "levels_unsorted",
    "long_windows",
]
OFFICIAL_KEYS = ("brief", "HL-min-Fair", "HL-min-Good", "HL-min-VeryGood", "full", "long", "middle", "short")


def score_case(name: str) -> tuple[dict, formats.SubmissionReport]:
    folder = CASES / name
    return evaluate.evaluate(read_records(folder / "pred.jsonl"), read_records(folder / "gt.jsonl"))


def official_text(result: dict) -> str:
    """The result written as the official eval_main writes it (without this scorer's input report)."""
    return json.dumps({key: value for key, value in result.items() if key != evaluate.REPORT_KEY}, indent=4)


@pytest.mark.parametrize("name", OFFICIAL_CASES)
def test_scores_equal_the_official_output_byte_for_byte(name):
    result, _ = score_case(name)
    assert official_text(result) == (CASES / name / "expected_metrics.json").read_text()


def test_etchat_like_ties_are_counted_and_scored_as_officially():
    result, report = score_case("etchat_ties")
    # 22 saliency lists of the wrong length and 40 windows past the video: counted, scored as the official code does
    assert report.saliency_length_mismatch == 22 and report.windows_outside_video == 40
    assert report.missing_predictions == 0 and not report.lost()
    assert result["brief"]["HL-min-Fair-mAP"] == 29.7


def test_reversed_windows_overlap_nothing():
    # The official code counts a reversed window of the ground truth's length as a hit (0/0 IoU); here it is a miss,
    # exactly as a window far outside the video would be in the official code.
    result, report = score_case("degenerate_windows")
    assert report.reversed_windows == 2
    expected = (CASES / "degenerate_windows" / "expected_metrics_reversed_as_far.json").read_text()
    assert official_text(result) == expected


def test_a_duplicated_qid_uses_its_last_line():
    result, report = score_case("duplicate_qid")
    assert report.duplicate_qids == 1
    assert official_text(result) == (CASES / "duplicate_qid" / "expected_metrics_last_line.json").read_text()


def test_missing_predictions_score_zero_and_stay_in_every_mean():
    # 15 ground-truth queries, 12 answered (+1 unknown qid). The official match_number=False scores the 12 shared
    # ones; with the 3 missing ones counted as 0, every full-bucket mean is 12/15 of the official one and each
    # length bucket (one missing query each, 4 answered) 4/5 of it.
    folder = CASES / "match_number_false"
    truth = formats.parse_ground_truth(read_records(folder / "gt.jsonl"), "gt")
    answers, report = formats.parse_submission(read_records(folder / "pred.jsonl"), truth, "pred")
    assert (report.missing_predictions, report.unknown_qids, report.lost()) == (3, 1, True)
    assert report.missing_qids == [1012, 1013, 1014]
    raw = json.loads((folder / "expected_raw.json").read_text())
    moments = metrics.moment_retrieval(truth, answers)
    highlights = metrics.highlight_detection(truth, answers)
    for bucket, ratio in (("full", 12 / 15), ("short", 4 / 5), ("middle", 4 / 5), ("long", 4 / 5)):
        for table in ("MR-mAP", "MR-R1"):
            for key, value in raw[bucket][table].items():
                assert 100 * moments[bucket][table][key] == pytest.approx(value * ratio, abs=1e-9)
    for name in ("HL-min-Fair", "HL-min-Good", "HL-min-VeryGood"):
        for key in ("HL-mAP", "HL-Hit1"):
            assert 100 * highlights[name][key] == pytest.approx(raw[name][key] * 12 / 15, abs=1e-9)


def test_an_empty_length_bucket_is_null_and_the_rest_is_official():
    result, _ = score_case("crash_empty_bucket")
    assert result["brief"]["MR-short-mAP"] is None
    assert set(result["short"]["MR-mAP"].values()) == {None} and set(result["short"]["MR-R1"].values()) == {None}
    expected = json.loads((CASES / "crash_empty_bucket" / "expected_tables.json").read_text())
    assert {name: result[name] for name in expected} == expected


# --------------------------------------------------------------------------------------------------------------------
# The definitions, on small hand-computed examples
# --------------------------------------------------------------------------------------------------------------------


def test_window_overlaps():
    assert metrics.window_iou([0, 10], [5, 15]) == pytest.approx(5 / 15)
    assert metrics.window_iou([0, 4], [6, 8]) == 0
    assert metrics.window_iou([8, 0], [0, 8]) == 0  # reversed: 0, not the official 0/0
    assert metrics.hull_iou([0, 4], [6, 8]) == 0
    assert metrics.hull_iou([0, 10], [5, 15]) == pytest.approx(5 / 15)


def test_ranking_cuts_to_ten_windows_before_sorting_and_keeps_ties_in_order():
    windows = [[i, i + 1, 0.5] for i in range(10)] + [[99, 100, 1.0]]
    ranked = metrics.ranked_windows(windows)
    assert [w[0] for w in ranked] == list(range(10))  # the 11th window, best scored, is not scored


def test_moment_ap_by_hand():
    truth = [[0, 10], [20, 30]]
    # ranked: a hit on the first window, a miss, a hit on the second: P = 1, 1/2, 2/3 at R = 1/2, 1/2, 1
    windows = [[0, 10, 0.9], [40, 50, 0.8], [20, 30, 0.7]]
    aps = metrics.query_aps(windows, truth)
    assert aps[0] == pytest.approx(0.5 * 1 + 0.5 * (2 / 3))
    # a second window on the same ground truth does not count twice
    assert metrics.query_aps([[0, 10, 1.0], [0, 10, 1.0]], [[0, 10]])[0] == 1.0
    assert metrics.query_aps([[0, 10, 1.0], [0, 10, 1.0]], truth)[0] == pytest.approx(0.5)
    assert metrics.query_aps(None, truth) == [0.0] * 10


def test_r1_uses_the_first_listed_window_not_the_best_scored():
    truth = [[0, 10]]
    assert metrics.top1_iou([[50, 60, 0.1], [0, 10, 0.9]], truth) == 0
    assert metrics.top1_iou([[0, 10, 0.1], [50, 60, 0.9]], truth) == 1


@pytest.mark.parametrize(
    ("scores", "labels", "expected"),
    [
        ([1, 1, 1, 1], [1, 0, 0, 1], 2 / 4),  # all tied: positives / clips
        ([1, 1, 0, 0], [1, 1, 0, 0], 1.0),  # every positive scores 1: precision of the 1s
        ([1, 1, 0, 0], [1, 0, 1, 0], (2 / 4 + max(2 / 4, 1 / 2)) / 2),  # positives in both groups
        ([0, 0, 1, 1], [1, 1, 0, 0], 2 / 4),  # no positive scores 1: positives / clips
        ([4, 3, 2, 1], [1, 0, 1, 0], (1 + 2 / 3) / 2),  # distinct scores
        ([0, 0, 0, 0], [0, 0, 0, 0], 0.0),  # no positive
        ([0, 1, 2, 3], [1, 1, 1, 1], 1.0),  # every clip positive
    ],
)
def test_highlight_ap_by_hand(scores, labels, expected):
    assert metrics.clip_ap(np.array(scores, float), np.array(labels, bool)) == pytest.approx(expected)


def test_hit1_takes_the_first_maximum_of_the_whole_list():
    clip_scores = np.zeros((3, 3), int)
    clip_scores[1] = [2, 0, 0]
    query = metrics.Query(1, 6.0, ((2.0, 4.0),), clip_scores)
    hits = [
        metrics.highlight_detection([query], {1: metrics.Answer(1, saliency=s)})["HL-min-Fair"]["HL-Hit1"]
        for s in ([0, 1, 1], [1, 0, 0], [0, 0, 0, 5], [0, 0, 0])
    ]
    assert hits == [1.0, 0.0, 0.0, 0.0]  # first max at clip 1; at 0; past the video; all tied -> clip 0


def test_rounding_is_the_correctly_rounded_binary_value():
    assert metrics.percent(0.53125) == 53.12
    assert metrics.percent(0.5312500001) == 53.13


# --------------------------------------------------------------------------------------------------------------------
# Bad input: counted, never a crash; broken ground truth is an error naming the entry
# --------------------------------------------------------------------------------------------------------------------

GT = {"qid": 5, "query": "q", "vid": "v", "duration": 10, "relevant_windows": [[2, 6]],
      "relevant_clip_ids": [1, 2], "saliency_scores": [[1, 2, 3], [4, 4, 4]]}  # fmt: skip


def test_bad_predictions_are_counted():
    truth = [GT, {**GT, "qid": 6}, {**GT, "qid": 7}]
    submission = [
        {"qid": 5, "pred_relevant_windows": [[2, 6, 1.0], [7, 3, 0.5], [8, 12, 0.2], "x", [1, 2]],
         "pred_saliency_scores": [0, 1, 0, 0]},
        {"qid": 6, "pred_relevant_windows": [], "pred_saliency_scores": []},
        {"qid": 8, "pred_relevant_windows": [[0, 1, 1]], "pred_saliency_scores": [1, 0, 0, 0, 0]},
    ]  # fmt: skip
    result, report = evaluate.evaluate(submission, truth)
    assert report.problems() == {
        "missing_predictions": 1,  # qid 7
        "unknown_qids": 1,  # qid 8
        "no_windows": 1,  # qid 6
        "malformed_windows": 2,  # "x" and [1, 2]
        "reversed_windows": 1,
        "windows_outside_video": 1,  # [8, 12] in a 10 s video
        "no_saliency": 1,  # qid 6
        "saliency_length_mismatch": 1,  # 4 scores for 5 clips
    }
    # qid 5 is perfect in MR (AP 1, R1 1), the other two score 0
    assert result["brief"]["MR-full-mAP"] == pytest.approx(100 / 3, abs=0.01)
    assert result["brief"]["MR-full-R1@0.7"] == pytest.approx(100 / 3, abs=0.01)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"duration": 0}, "'duration' must be a positive number"),
        ({"relevant_windows": []}, "'relevant_windows' must be a non-empty list"),
        ({"relevant_windows": [[6, 2]]}, r"bad relevant window \[6, 2\]"),
        ({"relevant_clip_ids": [1, 5]}, "clip id 5 is outside the 5 clips"),
        ({"saliency_scores": [[1, 2], [4, 4, 4]]}, r"saliency score \[1, 2\] of clip 1"),
        ({"qid": None}, "'qid' must be an integer or a string"),
    ],
)
def test_broken_ground_truth_names_the_entry(change, message):
    with pytest.raises(ValueError, match=message) as error:
        formats.parse_ground_truth([GT, {**GT, "qid": 9, **change}], "gt.jsonl")
    assert "gt.jsonl: entry #1" in str(error.value)


# --------------------------------------------------------------------------------------------------------------------
# The command line: a submission file, or E.T. Chat's inference records
# --------------------------------------------------------------------------------------------------------------------


def test_command_line_on_a_submission_writes_the_official_layout_and_a_report(tmp_path):
    folder = CASES / "hl_edges"
    out = tmp_path / "m.json"
    evaluate.main(["--pred", str(folder / "pred.jsonl"), "--gt", str(folder / "gt.jsonl"), "--out", str(out)])
    result = json.loads(out.read_text())
    assert official_text(result) == (folder / "expected_metrics.json").read_text()
    assert list(result)[-1] == evaluate.REPORT_KEY and result[evaluate.REPORT_KEY]["queries"] == 15


def test_command_line_exits_non_zero_when_predictions_are_missing(tmp_path, caplog):
    folder = CASES / "match_number_false"
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(folder / "pred.jsonl"), "--gt", str(folder / "gt.jsonl"), "--out", str(tmp_path / "m.json")])
    assert stop.value.code == 1
    assert "3 of 15 queries had no prediction (e.g. qid 1012, 1013, 1014)" in caplog.text
    assert json.loads((tmp_path / "m.json").read_text())[evaluate.REPORT_KEY]["missing_predictions"] == 3


def test_a_submission_needs_the_ground_truth(tmp_path, capsys):
    with pytest.raises(SystemExit, match="needs the ground truth") as stop:
        evaluate.main([str(CASES / "hl_edges" / "pred.jsonl")])
    assert stop.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def records_of(truth_lines: list[dict], submission: list[dict]) -> list[dict]:
    """Inference records as `etchat.eval.qvhighlights.infer` writes them, holding the given predictions."""
    by_qid = {line["qid"]: line for line in submission}
    records = []
    for line in truth_lines:
        sample = {**line, "response": "..."}
        records.append({**sample, "task": "mr", "pred_relevant_windows": by_qid[line["qid"]]["pred_relevant_windows"]})
        records.append({**sample, "task": "hd", "pred_saliency_scores": by_qid[line["qid"]]["pred_saliency_scores"]})
    return records


def test_inference_records_become_the_standard_submission_and_are_scored(tmp_path):
    folder = CASES / "etchat_ties"
    truth, submission = read_records(folder / "gt.jsonl"), read_records(folder / "pred.jsonl")
    records = records_of(truth, submission)
    (tmp_path / "qvhighlights_0.json").write_text(json.dumps(records[::2] + records[1::2][:10]))
    (tmp_path / "qvhighlights_1.json").write_text(json.dumps(records[1::2][10:]))
    evaluate.main([str(tmp_path)])
    result = json.loads((tmp_path / "metrics.json").read_text())
    assert official_text(result) == (folder / "expected_metrics.json").read_text()
    written = read_records(tmp_path / evaluate.SUBMISSION_FILE)
    assert [line["qid"] for line in written] == [line["qid"] for line in truth]
    assert set(written[0]) == {"qid", "query", "vid", "pred_relevant_windows", "pred_saliency_scores"}


def test_records_without_ground_truth_only_write_the_submission(tmp_path):
    records = [{"qid": 1, "query": "q", "vid": "v", "duration": 10, "task": "mr", "pred_relevant_windows": []}]
    (tmp_path / "qvhighlights.json").write_text(json.dumps(records))
    assert evaluate.main([str(tmp_path)]) is None
    assert read_records(tmp_path / evaluate.SUBMISSION_FILE)[0]["pred_relevant_windows"] == []
    assert not (tmp_path / "metrics.json").exists()


# --------------------------------------------------------------------------------------------------------------------
# From E.T. Chat's answer to the submission
# --------------------------------------------------------------------------------------------------------------------


def test_answer_times_become_ranked_windows():
    assert infer.answer_windows([12.0, 4.0, 20.0, 30.0, 31.0]) == [[4.0, 12.0, 1.0], [20.0, 30.0, 0.5]]
    assert infer.answer_windows([3.0]) == []


def test_matching_probabilities_become_clip_saliency():
    probabilities = [0.1, 0.2, 0.05, 0.4, 0.25]
    # 5 frames at 1 fps in a 5 s video: clips [0, 2) and [2, 4); the frame at 4 s lies in no whole clip
    assert infer.clip_saliency(probabilities, [0.0, 1.0, 2.0, 3.0, 4.0], 5.0) == [0.2, 0.4]


def test_annotations_give_two_samples_per_query(tmp_path):
    path = tmp_path / "highlight_val_release.jsonl"
    path.write_text(json.dumps(GT) + "\n" + json.dumps({**GT, "qid": 6, "query": "a man talks."}) + "\n")
    samples = infer.load_queries(path)
    assert [infer.sample_key(s) for s in samples] == ["5/mr", "5/hd", "6/mr", "6/hd"]
    assert infer.build_job(samples[2], "videos").query == prompts.MR_QUESTION.format("a man talks")
    path.write_text(json.dumps(GT) + "\n" + json.dumps(GT) + "\n")
    with pytest.raises(ValueError, match="qid 5 appears twice"):
        infer.load_queries(path)
    path.write_text(json.dumps({**GT, "duration": "150"}) + "\n")
    with pytest.raises(ValueError, match="qid 5: 'duration' must be a positive number"):
        infer.load_queries(path)
