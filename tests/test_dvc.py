"""Dense video captioning scoring against the official evaluators, and the YouCook2 / ActivityNet inputs.

The cases in tests/data/dvc/ were made outside this repository by a seeded generator (inputs ``pred.json``,
``ref*.json``; ``ref_youcook2.json`` is the released YouCook2 layout and ``ref.json`` its conversion) and scored by
the official code, unmodified:

* ``expected_densevid.json`` (``expected_densevid_ppv3.json``: ``-ppv 3``): ranjaykrishna/densevid_eval at commit
  9d4045aced3d827834a5d2da3c9f0692e3f33c1c with coco-caption 3f0fe9b819c0ea881a56441e4de1146924a394eb, under
  Python 2.7.18 (numpy 1.16.6), Java 17: ``python2.7 evaluate.py -s pred.json -r REF... --tious 0.3 0.5 0.7 0.9 -ppv
  1000 -v``; ``scores_per_tiou`` are the evaluator's scores, ``average_over_tious`` their means (what the CLI prints,
  / 100); ``derived.F1_of_mean_P_R`` is 2PR / (P + R) of those means.
* ``expected_soda.json``: fujiso/SODA at commit 9cb3e2c5a73c4e320a38c72f320b63bbef4aa798 (pycocoevalcap 1.2, Python
  3.11.7): ``python soda.py -p pred.json -r REF...``; ``merged.SODA_c`` is its result, and
  ``per_video_precision_recall_f1`` the same run on one video at a time.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from etchat.eval.dvc import evaluate, formats, infer, metrics, prompts
from etchat.eval.metrics.captions import CaptionScorers, caption_iou

CASES = Path(__file__).parent / "data" / "dvc"
CASE_NAMES = ["anet_edges", "anet_single", "anet_two_refs", "anet_tiny", "yc2_val", "yc2_many_preds"]


@pytest.fixture(scope="module")
def scorers():
    scorers = CaptionScorers()
    yield scorers
    scorers.close()


class SharedScorers:
    """Stands in for `CaptionScorers()` in the command line, reusing the module's METEOR process (its start-up
    takes most of a minute on a busy machine)."""

    def __init__(self, scorers):
        self.scorers = scorers

    def __call__(self):
        return self

    def __getattr__(self, name):
        return getattr(self.scorers, name)

    def close(self):
        pass


@pytest.fixture
def shared_scorers(monkeypatch, scorers):
    monkeypatch.setattr(evaluate, "CaptionScorers", SharedScorers(scorers))


@pytest.fixture(scope="module")
def scored(scorers):
    """(result, report) of a case, computed once per case and proposal limit."""
    cache = {}

    def score(name: str, max_proposals: int = 1000):
        if (name, max_proposals) not in cache:
            submission, references, _ = load_case(name)
            cache[name, max_proposals] = evaluate.evaluate(submission, references, name, max_proposals, scorers)
        return cache[name, max_proposals]

    return score


def load_case(name: str) -> tuple[dict, list[dict], dict]:
    folder = CASES / name
    case = json.loads((folder / "case.json").read_text())
    # YouCook2 cases are read from the released layout, so the conversion is checked too.
    raw = case.get("youcook2_raw")
    references = [formats.load_references(folder / (raw or name)) for name in case["references"]]
    return json.loads((folder / "pred.json").read_text()), references, case


@pytest.mark.parametrize(("name", "max_proposals"), [*((n, 1000) for n in CASE_NAMES), ("yc2_many_preds", 3)])
def test_caption_and_localisation_scores_equal_the_official_evaluation(scored, name, max_proposals):
    result, _ = scored(name, max_proposals)
    suffix = "" if max_proposals == 1000 else f"_ppv{max_proposals}"
    expected = json.loads((CASES / name / f"expected_densevid{suffix}.json").read_text())
    for metric, value in expected["average_over_tious"].items():
        assert result[metric] == pytest.approx(value, abs=1e-9), metric
    for metric, values in expected["scores_per_tiou"].items():
        mine = [result["per_tiou"][str(tiou)][metric] for tiou in metrics.TIOUS]
        assert mine == pytest.approx(values, abs=1e-9), metric
    assert result["F1"] == pytest.approx(expected["derived"]["F1_of_mean_P_R"], abs=1e-9)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_soda_c_equals_official_soda_with_missing_videos_counted_as_zero(scored, name):
    result, report = scored(name)
    official = json.loads((CASES / name / "expected_soda.json").read_text())["merged"]
    if report.missing_predictions == 0:
        assert result["SODA_c"] == pytest.approx(official["SODA_c"], abs=1e-9)
    # official SODA skips videos without a prediction; here they stay in the mean with 0
    per_video_f = [prf[2] for prf in official["per_video_precision_recall_f1"].values()]
    assert result["SODA_c"] == pytest.approx(sum(per_video_f) / report.videos, abs=1e-9)


def test_problems_of_the_cases_are_counted():
    submission, references, _ = load_case("anet_two_refs")
    _, report = formats.parse_submission(submission, references, "pred.json", 1000)
    # 2 videos without prediction and 1 keyed without "v_" (so missing too); that one and 1 extra are unknown
    assert (report.missing_predictions, report.unknown_videos, report.lost()) == (3, 2, True)
    submission, references, _ = load_case("anet_edges")
    _, report = formats.parse_submission(submission, references, "pred.json", 1000)
    assert report.problems() == {"reversed_proposals": 1}
    submission, references, _ = load_case("yc2_many_preds")
    _, report = formats.parse_submission(submission, references, "pred.json", 3)
    assert report.proposals_beyond_limit == 29


def test_youcook2_layout_becomes_its_validation_videos_in_activitynet_layout():
    for name in ("yc2_val", "yc2_many_preds"):
        converted = formats.load_references(CASES / name / "ref_youcook2.json")
        assert converted == json.loads((CASES / name / "ref.json").read_text())


# --------------------------------------------------------------------------------------------------------------------
# The definitions on small examples
# --------------------------------------------------------------------------------------------------------------------


def test_overlap_of_exactly_t_counts_below_t():
    assert caption_iou([0, 5], [0, 10]) < 0.5  # 5 / (10 + 1e-8)
    assert caption_iou([20, 0], [0, 20]) == 0  # reversed
    assert caption_iou([0, 10], [5, 15]) == pytest.approx(5 / 15)


def test_ordered_matching_keeps_pairs_in_order():
    # the best pairs (0, 1) and (1, 0) cross: only one of them can be taken
    assert metrics.ordered_matching_score(np.array([[0.1, 0.9], [0.8, 0.1]])) == pytest.approx(0.9)
    assert metrics.ordered_matching_score(np.array([[0.5, 0.0], [0.0, 0.5]])) == pytest.approx(1.0)
    assert metrics.ordered_matching_score(np.array([[0.3, 0.4, 0.2]])) == pytest.approx(0.4)


def test_empty_proposal_lists_score_zero_instead_of_crashing(scorers):
    references = [{"v1": {"duration": 10, "timestamps": [[0, 5]], "sentences": ["a man walks"]},
                   "v2": {"duration": 10, "timestamps": [[0, 5]], "sentences": ["a dog runs"]}}]  # fmt: skip
    submission = {"results": {"v1": [{"sentence": "a man walks", "timestamp": [0, 5]}], "v2": []}}
    result, report = evaluate.evaluate(submission, references, scorers=scorers)
    assert report.no_proposals == 1 and not report.lost()
    # v1 is perfect, v2 scores 0: half of the perfect scores
    assert result["Recall"] == pytest.approx(0.5) and result["Precision"] == pytest.approx(0.5)
    assert result["SODA_c"] == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------------------------
# The command line and E.T. Chat's records
# --------------------------------------------------------------------------------------------------------------------


def records_of(references: dict, submission: dict) -> list[dict]:
    return [
        {"video_id": video, "dataset": "activitynet", **entry, "response": "...",
         "proposals": submission["results"].get(video, [])}
        for video, entry in references.items()
    ]  # fmt: skip


def test_records_become_the_challenge_submission_and_are_scored(tmp_path, shared_scorers):
    submission, (references,), _ = load_case("anet_edges")
    (tmp_path / "dvc_0.json").write_text(json.dumps(records_of(references, submission)[:2]))
    (tmp_path / "dvc_1.json").write_text(json.dumps(records_of(references, submission)[2:]))
    evaluate.main([str(tmp_path)])
    result = json.loads((tmp_path / "metrics.json").read_text())
    expected = json.loads((CASES / "anet_edges" / "expected_densevid.json").read_text())["average_over_tious"]
    assert result["CIDEr"] == pytest.approx(expected["CIDEr"], abs=1e-9)
    written = json.loads((tmp_path / evaluate.SUBMISSION_FILE).read_text())
    assert set(written) == {"version", "results", "external_data"}
    assert written["results"] == {video: submission["results"][video] for video in references}
    assert result[evaluate.REPORT_KEY]["videos"] == 3


def test_command_line_exits_non_zero_when_videos_are_lost(tmp_path, caplog, shared_scorers):
    folder = CASES / "anet_single"
    out = tmp_path / "m.json"
    with pytest.raises(SystemExit) as stop:
        evaluate.main([str(folder / "pred.json"), "--references", str(folder / "ref.json"), "--out", str(out)])
    assert stop.value.code == 1
    assert "2 of 10 videos had no prediction" in caplog.text
    assert json.loads(out.read_text())[evaluate.REPORT_KEY]["missing_predictions"] == 2


def test_a_submission_needs_its_references():
    with pytest.raises(SystemExit, match="needs its reference files") as stop:
        evaluate.main([str(CASES / "anet_single" / "pred.json")])
    assert stop.value.code == 2


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"v": {"timestamps": [[0, 1]], "sentences": []}}, "1 timestamps but 0 sentences"),
        ({"v": {"timestamps": [[0]], "sentences": ["x"]}}, r"bad event timestamp \[0\]"),
        ({"v": {"timestamps": [], "sentences": []}}, "needs a non-empty 'timestamps' list"),
        ({}, "expected a non-empty object of videos"),
    ],
)
def test_broken_references_name_the_video(tmp_path, data, message):
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        formats.load_references(path)


def test_inference_samples_prompts_and_answers(tmp_path):
    samples = infer.load_videos(CASES / "yc2_val" / "ref_youcook2.json")
    assert {s["dataset"] for s in samples} == {"youcook2"}
    assert len(samples) == len(json.loads((CASES / "yc2_val" / "ref.json").read_text()))
    assert infer.build_job(samples[0], str(tmp_path)).query == prompts.YOUCOOK2_QUESTION
    samples = infer.load_videos(CASES / "anet_two_refs" / "ref_1.json")
    assert infer.build_job(samples[0], str(tmp_path)).query == prompts.ACTIVITYNET_QUESTION
    assert infer.answer_proposals("0 - 12, a man cuts an onion. 20 - 14, he fries it.") == [
        {"sentence": "a man cuts an onion.", "timestamp": [0.0, 12.0]},
        {"sentence": "he fries it.", "timestamp": [14.0, 20.0]},
    ]
    assert infer.answer_proposals("I cannot tell.") == []


def test_video_file_finds_other_containers(tmp_path):
    (tmp_path / "b.webm").write_bytes(b"")
    assert infer.video_file(str(tmp_path), "b") == str(tmp_path / "b.webm")
    assert infer.video_file(str(tmp_path), "a") == str(tmp_path / "a.mp4")


def test_annotations_with_a_video_twice_are_refused(tmp_path):
    entry = '{"duration": 10, "timestamps": [[0, 2]], "sentences": ["a"]}'
    other = '{"duration": 10, "timestamps": [[4, 6]], "sentences": ["b"]}'
    (tmp_path / "val.json").write_text(f'{{"v1": {entry}, "v1": {other}}}')
    with pytest.raises(ValueError, match="key 'v1' appears twice with different values"):
        infer.load_videos(tmp_path / "val.json")
    (tmp_path / "val.json").write_text(f'{{"v1": {entry}, "v1": {entry}}}')
    assert [sample["video_id"] for sample in infer.load_videos(tmp_path / "val.json")] == ["v1"]
