"""The quickstart's random baselines in each benchmark's prediction format, and its summary table."""

import json
import math

from etchat.eval.dvc import formats as dvc_formats
from etchat.eval.qvhighlights import evaluate as qvh_evaluate
from etchat.toy import baselines

QVH_LINES = [
    {"qid": q, "query": "a red circle moves up", "vid": f"test_{q:05d}", "duration": 21.0,
     "relevant_windows": [[4, 9]], "relevant_clip_ids": [2, 3, 4], "saliency_scores": [[1, 1, 2], [4, 3, 4], [1, 1, 1]]}
    for q in range(3)
]  # fmt: skip
DVC_REFERENCES = {
    "test_00000": {"duration": 30.0, "timestamps": [[0, 9], [12, 20]], "sentences": ["a red circle moves up", "b"]},
    "test_00001": {"duration": 25.0, "timestamps": [[3, 8]], "sentences": ["a blue square moves down"]},
}


def test_random_qvhighlights_answers_are_scored_like_inference_output(tmp_path):
    anno = tmp_path / "qvh.jsonl"
    anno.write_text("".join(json.dumps(line) + "\n" for line in QVH_LINES))
    out = baselines.random_spans(str(anno), str(tmp_path / "random"), seed=3, benchmark="qvhighlights")
    records = json.loads(out.read_text())
    assert [(r["qid"], r["task"]) for r in records] == [(q, t) for q in range(3) for t in ("mr", "hd")]
    for record in records[::2]:
        ((start, end, score),) = record["pred_relevant_windows"]
        assert 0 <= start <= end <= 21 and score == 1.0
    assert all(len(r["pred_saliency_scores"]) == 10 for r in records[1::2])  # int(21 / 2) clips
    assert baselines.random_spans(str(anno), str(tmp_path / "again"), seed=3, benchmark="qvhighlights").read_text() == (
        out.read_text()
    )
    result = qvh_evaluate.main([str(out.parent)])
    assert result["input_report"]["missing_predictions"] == 0 and 0 <= result["brief"]["MR-full-mAP"] <= 100


def test_random_dense_captions_become_a_submission(tmp_path):
    anno = tmp_path / "dvc.json"
    anno.write_text(json.dumps(DVC_REFERENCES))
    records = json.loads(baselines.random_spans(str(anno), str(tmp_path), seed=0, benchmark="dvc").read_text())
    submission, references = dvc_formats.submission_from_records(records)
    assert references == DVC_REFERENCES
    proposals, report = dvc_formats.parse_submission(submission, [references], "random", 1000)
    assert report.problems() == {} and all(len(p) == 3 for p in proposals.values())


def test_summary_rows_of_every_benchmark(tmp_path):
    run = tmp_path / "trained"
    for folder, metrics in {
        "etbench": {"tvg": {"synthetic": {"F1": 0.5, "mIoU": 0.25}}},
        "qvhighlights": {"brief": {"MR-full-mAP": 40.0, "MR-full-R1@0.5": 50.0, "HL-min-VeryGood-mAP": None,
                                   "HL-min-VeryGood-Hit1": 10.0}},
        "dvc": {"F1": 0.3, "CIDEr": 1.5, "METEOR": 0.2, "SODA_c": 0.1},
    }.items():  # fmt: skip
        (run / folder).mkdir(parents=True)
        (run / folder / "metrics.json").write_text(json.dumps(metrics))
    lines = baselines.summary([("trained", str(run))])
    rows = {line.split()[0] + " " + line.split()[1]: line.split()[-1] for line in lines[1:]}
    assert rows["tvg F1"] == "50.0" and rows["qvh MR-full-mAP"] == "40.0" and rows["densecap CIDEr"] == "150.0"
    assert math.isnan(float(rows["qvh HL-min-VeryGood-mAP"]))
