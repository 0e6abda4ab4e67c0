"""E.T. Bench and Charades-STA inference: output layout, sharding, resuming, errors, batching, the published prompt."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from etchat.data.tokenization import tokenize
from etchat.eval import runner
from etchat.eval.charades import infer as charades_infer
from etchat.eval.charades import metrics as charades_metrics
from etchat.eval.dvc import infer as dvc_infer
from etchat.eval.dvc import prompts as dvc_prompts
from etchat.eval.etbench import infer as etbench_infer
from etchat.eval.qvhighlights import evaluate as qvh_evaluate
from etchat.eval.qvhighlights import infer as qvh_infer
from etchat.eval.qvhighlights import prompts as qvh_prompts
from etchat.model import generation
from etchat.model.generation import MatchedAnswer
from tests.video_utils import write_test_video

ROOT = Path(__file__).resolve().parents[1]

# The phi3 template of docs/design.md §4, written out.
PHI3_PROMPT = "<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\n<image>\n{}<|end|>\n<|assistant|>\n"

# (file name, samples): two files so that loading a folder concatenates them in name order.
ANNOTATIONS = {
    "etbench_vid_rar.json": [
        {
            "idx": 0,
            "task": "rar",
            "source": "perception_test",
            "video": "v0.mp4",
            "duration": 4.0,
            "src": [1.0],
            "q": "Which action happens at <vid>? Options: (A) open door (B) sit down (C) walk (D) read",
            "o": ["open door", "sit down", "walk", "read"],
            "p": 1,
        },
    ],
    "etbench_vid_tvg.json": [
        {"idx": 0, "task": "tvg", "source": "charades_sta", "video": "v1.mp4", "duration": 6.0, "tgt": [[1, 3]],
         "q": "When does the person sit down?"},
        {"idx": 1, "task": "tvg", "source": "charades_sta", "video": "v2.mp4", "duration": 3.0, "tgt": [[0, 2]],
         "q": "When does the light turn on?"},
        {"idx": 2, "task": "tvg", "source": "charades_sta", "video": "v0.mp4", "duration": 4.0, "tgt": [[2, 4]],
         "q": "When is the door opened?"},
        {"idx": 3, "task": "tvg", "source": "charades_sta", "video": "v1.mp4", "duration": 6.0, "tgt": [[0, 5]],
         "q": "When does someone walk?"},
    ],
}  # fmt: skip
ALL_SAMPLES = ANNOTATIONS["etbench_vid_rar.json"] + ANNOTATIONS["etbench_vid_tvg.json"]
VIDEO_SECONDS = {"v0.mp4": 4, "v1.mp4": 6, "v2.mp4": 3}


@pytest.fixture(scope="session")
def tiny_model(tiny_checkpoint):
    from etchat.model.loading import load_etchat

    model, tokenizer = load_etchat(tiny_checkpoint)
    return model.eval(), tokenizer


@pytest.fixture(scope="session")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("etbench")
    videos = root / "videos"
    videos.mkdir()
    for name, seconds in VIDEO_SECONDS.items():
        write_test_video(videos / name, num_frames=2 * seconds, fps=2, size=(32, 32))
    annotations = root / "annotations"
    annotations.mkdir()
    for name, samples in ANNOTATIONS.items():
        (annotations / name).write_text(json.dumps(samples))
    return root


def run_benchmark(benchmark, model_and_tokenizer, argv):
    args = runner.build_parser(benchmark, None).parse_args(argv)
    return runner.run(benchmark, args, *model_and_tokenizer)


def run_bench(model_and_tokenizer, bench, pred, *extra, anno=None):
    return run_benchmark(
        etbench_infer.ETBENCH,
        model_and_tokenizer,
        [
            "--anno_path", str(anno or bench / "annotations"),
            "--data_path", str(bench / "videos"),
            "--pred_path", str(pred),
            "--model_path", "unused",
            "--num_workers", "0",
            "--max_new_tokens", "4",
            *extra,
        ],
    )  # fmt: skip


def load(path):
    return json.loads(Path(path).read_text())


def prediction_names(folder) -> list[str]:
    """The prediction files of a folder (its run.json says what made them)."""
    return sorted(p.name for p in Path(folder).glob("*.json") if p.name != "run.json")


class GenerateSpy:
    """Stands in for `generate`: records requests and settings, answers with a text naming the question."""

    def __init__(self, real=None, fail_on=None):
        self.calls, self.real, self.fail_on = [], real, fail_on

    def __call__(self, model, tokenizer, requests, settings, generator=None, on_token=None):
        self.calls.append((requests, settings))
        if any(self.fail_on and self.fail_on in r.query for r in requests):
            raise RuntimeError("boom")
        if self.real is not None:
            return self.real(model, tokenizer, requests, settings, generator=generator)
        return [MatchedAnswer(text=f"answer to {r.query}", raw_text="", token_ids=[]) for r in requests]

    @property
    def queries(self):
        return [r.query for requests, _ in self.calls for r in requests]


@pytest.fixture
def spy(monkeypatch):
    spy = GenerateSpy()
    monkeypatch.setattr(runner, "generate", spy)
    return spy


def test_output_keeps_every_field_and_adds_the_answer(tiny_model, bench, tmp_path):
    run_bench(tiny_model, bench, tmp_path, "--greedy")
    records = load(tmp_path / "etbench.json")
    assert [{k: v for k, v in r.items() if k != "a"} for r in records] == ALL_SAMPLES
    assert all(isinstance(r["a"], str) and "error" not in r for r in records)
    assert len((tmp_path / "journal" / "etbench.jsonl").read_text().splitlines()) == len(ALL_SAMPLES)
    # The scorer accepts the folder: it reads etbench.json only (the journal is in a subfolder).
    from etchat.eval.etbench.predictions import load_predictions, prediction_files

    files, _ = prediction_files(tmp_path)
    assert files == [tmp_path / "etbench.json"]
    assert len(load_predictions(files[0])) == len(ALL_SAMPLES)


def test_shard_i_of_k_takes_samples_i_step_k(tiny_model, bench, tmp_path, spy):
    for index in range(3):
        run_bench(tiny_model, bench, tmp_path, "--chunk", "3", "--index", str(index))
    assert prediction_names(tmp_path) == ["etbench_0.json", "etbench_1.json", "etbench_2.json"]
    for index in range(3):
        records = load(tmp_path / f"etbench_{index}.json")
        expected = [ALL_SAMPLES[i] for i in range(index, len(ALL_SAMPLES), 3)]
        assert [{k: v for k, v in r.items() if k != "a"} for r in records] == expected
        assert [r["a"] for r in records] == [f"answer to {s['q']}" for s in expected]


def test_resume_skips_answered_samples_and_redoes_a_cut_line(tiny_model, bench, tmp_path, spy):
    run_bench(tiny_model, bench, tmp_path)
    journal = tmp_path / "journal" / "etbench.jsonl"
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    prefilled = {**lines[2], "a": "PREFILLED"}
    # The second line was cut short by a crash: that sample must be answered again.
    journal.write_text(json.dumps(prefilled) + "\n" + json.dumps(lines[3])[:25])
    spy.calls.clear()
    run_bench(tiny_model, bench, tmp_path)
    assert sorted(spy.queries) == sorted(s["q"] for i, s in enumerate(ALL_SAMPLES) if i != 2)
    records = load(tmp_path / "etbench.json")
    assert records[2] == {**ALL_SAMPLES[2], "a": "PREFILLED"}
    assert [r["idx"] for r in records] == [s["idx"] for s in ALL_SAMPLES]

    spy.calls.clear()
    run_bench(tiny_model, bench, tmp_path)
    assert spy.calls == []
    assert load(tmp_path / "etbench.json") == records


def test_resume_works_across_shard_layouts(tiny_model, bench, tmp_path, spy):
    run_bench(tiny_model, bench, tmp_path, "--chunk", "2", "--index", "0")
    spy.calls.clear()
    run_bench(tiny_model, bench, tmp_path)  # one process now: only the samples of old shard 1 are left
    assert sorted(spy.queries) == sorted(ALL_SAMPLES[i]["q"] for i in (1, 3))
    assert len(load(tmp_path / "etbench.json")) == len(ALL_SAMPLES)


def test_missing_video_gives_an_error_record_and_the_run_goes_on(tiny_model, bench, tmp_path, spy):
    samples = [dict(ALL_SAMPLES[1]), {**ALL_SAMPLES[2], "video": "missing.mp4"}, dict(ALL_SAMPLES[3])]
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps(samples))
    pred = tmp_path / "pred"
    run_bench(tiny_model, bench, pred, "--batch_size", "3", anno=anno)
    records = load(pred / "etbench.json")
    assert records[1]["a"] == "" and "missing.mp4" in records[1]["error"]
    assert [r["a"] for r in (records[0], records[2])] == [f"answer to {s['q']}" for s in (samples[0], samples[2])]
    assert "error" not in records[0] and "error" not in records[2]

    spy.calls.clear()
    run_bench(tiny_model, bench, pred, "--batch_size", "3", anno=anno)  # a rerun retries the failed sample only
    assert spy.queries == []  # its video is still missing: no generation, a fresh error record
    assert "missing.mp4" in load(pred / "etbench.json")[1]["error"]


def test_a_failing_sample_in_a_batch_fails_alone(tiny_model, bench, tmp_path, monkeypatch):
    spy = GenerateSpy(fail_on="light")
    monkeypatch.setattr(runner, "generate", spy)
    run_bench(tiny_model, bench, tmp_path, "--batch_size", "3")
    records = load(tmp_path / "etbench.json")
    failed = [r for r in records if "error" in r]
    assert [r["q"] for r in failed] == ["When does the light turn on?"]
    assert failed[0]["error"] == "RuntimeError: boom" and failed[0]["a"] == ""
    assert all(r["a"] == f"answer to {r['q']}" for r in records if "error" not in r)


def test_batched_greedy_answers_equal_batch_size_one(tiny_model, bench, tmp_path):
    run_bench(tiny_model, bench, tmp_path / "b1", "--greedy", "--max_new_tokens", "6")
    run_bench(tiny_model, bench, tmp_path / "b3", "--greedy", "--max_new_tokens", "6", "--batch_size", "3",
              "--num_workers", "2")  # fmt: skip
    single, batched = load(tmp_path / "b1" / "etbench.json"), load(tmp_path / "b3" / "etbench.json")
    assert [r["a"] for r in batched] == [r["a"] for r in single]
    assert all(r["a"] for r in single)


def test_seeded_sampling_does_not_depend_on_sharding(tiny_model, bench, tmp_path):
    run_bench(tiny_model, bench, tmp_path / "one", "--seed", "7")
    for index in range(2):
        run_bench(tiny_model, bench, tmp_path / "two", "--seed", "7", "--chunk", "2", "--index", str(index))
    one = {(r["task"], r["idx"]): r["a"] for r in load(tmp_path / "one" / "etbench.json")}
    two = load(tmp_path / "two" / "etbench_0.json") + load(tmp_path / "two" / "etbench_1.json")
    assert {(r["task"], r["idx"]): r["a"] for r in two} == one


def test_published_prompt_settings_and_video_input(tiny_model, bench, tmp_path, spy):
    model, tokenizer = tiny_model
    run_bench(tiny_model, bench, tmp_path, "--max_new_tokens", "2048")
    requests = {r.query: (r, settings) for requests, settings in spy.calls for r in requests}
    for sample in ALL_SAMPLES:
        request, settings = requests[sample["q"]]
        prompt = PHI3_PROMPT.format(sample["q"])
        if sample["task"] == "rar":
            prompt += "Best Option: ("  # the prompt ends with a newline: no space before it
        assert torch.equal(request.input_ids, tokenize(prompt, tokenizer))
        assert settings.repetition_penalty == (1.2 if sample["task"] == "rar" else None)
        assert request.src == sample.get("src")
        seconds = VIDEO_SECONDS[sample["video"]]
        assert request.tags == [float(t) for t in range(seconds)]  # 1 fps
        assert request.video.shape == (seconds, 3, 224, 224)
        assert (settings.do_sample, settings.temperature, settings.top_k) == (True, 0.2, 50)
        assert settings.max_new_tokens == 2048 and settings.stop_strings == ("<|end|>",)
        assert set(settings.eos_token_ids) == set(model.generation_config.eos_token_id)


def test_best_option_prefix_gets_a_space_unless_the_prompt_ends_with_a_newline():
    assert etbench_infer.build_prompt("Q?", "phi3", best_option=True).endswith("<|assistant|>\nBest Option: (")
    assert etbench_infer.build_prompt("Q?", "vicuna_v1", best_option=True).endswith("ASSISTANT: Best Option: (")
    assert etbench_infer.build_prompt("Q?", "phi3") == PHI3_PROMPT.format("Q?")


def test_rar_repetition_penalty_spares_vid_in_real_generation(tiny_model, bench, tmp_path, monkeypatch):
    model, _ = tiny_model
    seen = []

    class Recorder(generation.MatchAwareRepetitionPenalty):
        def __init__(self, penalty, match_token_id):
            super().__init__(penalty, match_token_id)
            seen.append((penalty, match_token_id))

    monkeypatch.setattr(generation, "MatchAwareRepetitionPenalty", Recorder)
    anno = tmp_path / "rar.json"
    anno.write_text(json.dumps(ANNOTATIONS["etbench_vid_rar.json"]))
    run_bench(tiny_model, bench, tmp_path / "pred", "--greedy", anno=anno)
    assert seen == [(1.2, model.config.match_token_id)]


def test_save_sims_stores_curves_frame_times_and_matched_times(tiny_model, bench, tmp_path, monkeypatch):
    def fake_generate(model, tokenizer, requests, settings, generator=None, on_token=None):
        answers = []
        for r in requests:
            sim = torch.zeros(len(r.tags))
            sim[1] = 0.75
            sim[2] = 0.25
            answers.append(MatchedAnswer("at 1", "at <vid>", [], [1], [r.tags[1]], [sim]))
        return answers

    monkeypatch.setattr(runner, "generate", fake_generate)
    run_bench(tiny_model, bench, tmp_path, "--save_sims", "--plot", "2")
    record = load(tmp_path / "etbench.json")[1]  # v1.mp4: 6 s
    assert record["sims"] == [[0.0, 0.75, 0.25, 0.0, 0.0, 0.0]]
    assert record["frame_times"] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    assert record["match_times"] == [1.0]
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == [
        "rar_perception_test_0.png",
        "tvg_charades_sta_0.png",
    ]


def test_annotation_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"idx": 0, "task": "tvg", "source": "s", "video": "v.mp4"}]))
    with pytest.raises(ValueError, match=r"bad\.json: sample #0 lacks q"):
        etbench_infer.load_annotations(bad)
    twice = tmp_path / "twice.json"
    twice.write_text(json.dumps([ALL_SAMPLES[1], ALL_SAMPLES[1]]))
    with pytest.raises(ValueError, match="tvg/charades_sta/0"):
        etbench_infer.load_annotations(twice)


# --------------------------------------------------------------------------------------------------------------------
# Charades-STA
# --------------------------------------------------------------------------------------------------------------------

CHARADES_LINES = [
    "v1 1.0 3.0##person sits down.",
    "v1 2.0 0.0##person opens a door",  # reversed times: the span is ordered
    "",
    "v2 0.0 2.0##the light turns on.",
]


def run_charades(model_and_tokenizer, bench, anno, pred, *extra):
    return run_benchmark(
        charades_infer.CHARADES_STA,
        model_and_tokenizer,
        [
            "--anno_path", str(anno),
            "--data_path", str(bench / "videos"),
            "--pred_path", str(pred),
            "--model_path", "unused",
            "--num_workers", "0",
            "--max_new_tokens", "4",
            *extra,
        ],
    )  # fmt: skip


def test_charades_prompt_predictions_and_scores(tiny_model, bench, tmp_path, monkeypatch):
    anno = tmp_path / "charades_sta_test.txt"
    anno.write_text("\n".join(CHARADES_LINES) + "\n")
    # Matched times per sentence: exact, half overlapping, and a single time (a failure).
    times = {"sits down": [1.0, 3.0], "opens a door": [1.0, 3.0], "light": [1.0]}
    spy = GenerateSpy()

    def fake_generate(model, tokenizer, requests, settings, generator=None, on_token=None):
        spy(model, tokenizer, requests, settings)
        picked = [next(v for k, v in times.items() if k in r.query) for r in requests]
        return [MatchedAnswer(" - ".join(map(str, t)), "", [], [int(x) for x in t], t) for t in picked]

    monkeypatch.setattr(runner, "generate", fake_generate)
    run_charades(tiny_model, bench, anno, tmp_path, "--batch_size", "2")
    _, tokenizer = tiny_model
    question = "Localize the video moment according to the query 'person sits down'."
    first_request = spy.calls[0][0][0]
    assert first_request.query == question
    assert torch.equal(first_request.input_ids, tokenize(PHI3_PROMPT.format(question), tokenizer))

    records = load(tmp_path / "charades_sta.json")
    assert [r["idx"] for r in records] == [0, 1, 2]
    assert [r["span"] for r in records] == [[1.0, 3.0], [0.0, 2.0], [0.0, 2.0]]
    assert [r["pred"] for r in records] == [[1.0, 3.0], [1.0, 3.0], [1.0]]
    assert records[1]["query"] == "Localize the video moment according to the query 'person opens a door'."
    assert [r["duration"] for r in records] == [6.0, 6.0, 3.0]
    # IoUs 1, 1/3 and a failure; the scorer writes metrics.json next to the predictions.
    charades_metrics.main([str(tmp_path)])
    scores = load(tmp_path / "metrics.json")
    assert scores["R1@0.3"] == pytest.approx(2 / 3)
    assert scores["R1@0.5"] == pytest.approx(1 / 3)
    assert scores["R1@0.7"] == pytest.approx(1 / 3)
    assert scores["mIoU"] == pytest.approx((1 + 1 / 3) / 3, abs=1e-6)
    assert scores["FailureRate"] == pytest.approx(1 / 3)


def test_charades_with_the_real_model_resumes_and_records_errors(tiny_model, bench, tmp_path):
    anno = tmp_path / "test.txt"
    anno.write_text("v1 1.0 3.0##person sits down.\nnope 0 1##a missing video\nv2 0 2##light\n")
    run_charades(tiny_model, bench, anno, tmp_path, "--chunk", "2", "--index", "0", "--greedy")
    records = load(tmp_path / "charades_sta_0.json")
    assert [r["vid"] for r in records] == ["v1", "v2"]
    assert all(isinstance(r["pred"], list) and isinstance(r["response"], str) for r in records)
    run_charades(tiny_model, bench, anno, tmp_path, "--chunk", "2", "--index", "1", "--greedy")
    (missing,) = load(tmp_path / "charades_sta_1.json")
    assert missing["pred"] is None and "nope.mp4" in missing["error"]
    assert charades_metrics.grounding_scores(charades_metrics.load_predictions(tmp_path))["Total"] == 3


def test_charades_malformed_line_names_file_and_line(tmp_path):
    anno = tmp_path / "test.txt"
    anno.write_text("v1 1.0 3.0##ok\nv2 1.0##no end time\n")
    with pytest.raises(ValueError, match=r"test\.txt:2: expected 'VID start end##sentence'"):
        charades_infer.load_charades(anno)


# --------------------------------------------------------------------------------------------------------------------
# QVHighlights and dense video captioning
# --------------------------------------------------------------------------------------------------------------------

QVH_LINES = [
    {"qid": 7, "query": "A person sits down.", "vid": "v1", "duration": 6, "relevant_windows": [[0, 4]],
     "relevant_clip_ids": [0, 1], "saliency_scores": [[4, 3, 2], [1, 1, 1]]},
    {"qid": 8, "query": "The light turns on", "vid": "missing", "duration": 4, "relevant_windows": [[0, 2]],
     "relevant_clip_ids": [0], "saliency_scores": [[2, 2, 2]]},
]  # fmt: skip


def run_qvhighlights(model_and_tokenizer, bench, anno, pred, *extra):
    return run_benchmark(
        qvh_infer.QVHIGHLIGHTS,
        model_and_tokenizer,
        ["--anno_path", str(anno), "--data_path", str(bench / "videos"), "--pred_path", str(pred),
         "--model_path", "unused", "--num_workers", "0", "--max_new_tokens", "4", *extra],
    )  # fmt: skip


def test_qvhighlights_prompts_records_submission_and_scores(tiny_model, bench, tmp_path, monkeypatch):
    anno = tmp_path / "highlight_val_release.jsonl"
    anno.write_text("".join(json.dumps(line) + "\n" for line in QVH_LINES))
    spy = GenerateSpy()

    def fake_generate(model, tokenizer, requests, settings, generator=None, on_token=None):
        spy(model, tokenizer, requests, settings)
        # MR: the times 3 and 1; HD: a matching curve over v1's 6 frames (1 fps)
        answers = []
        for request in requests:
            if "highlight" in request.query:
                assert len(request.tags) == 6
                sims = torch.tensor([0.1, 0.3, 0.05, 0.05, 0.4, 0.1])
                answers.append(MatchedAnswer("in 4", "", [], [4], [4.0], [sims]))
            else:
                answers.append(MatchedAnswer("3 - 1", "", [], [3, 1], [3.0, 1.0]))
        return answers

    monkeypatch.setattr(runner, "generate", fake_generate)
    run_qvhighlights(tiny_model, bench, anno, tmp_path, "--batch_size", "2")
    mr_question = qvh_prompts.MR_QUESTION.format("A person sits down")
    assert spy.queries[:2] == [mr_question, qvh_prompts.HD_QUESTION.format("A person sits down")]
    _, tokenizer = tiny_model
    assert torch.equal(spy.calls[0][0][0].input_ids, tokenize(PHI3_PROMPT.format(mr_question), tokenizer))

    records = load(tmp_path / "qvhighlights.json")
    assert [(r["qid"], r["task"]) for r in records] == [(7, "mr"), (7, "hd"), (8, "mr"), (8, "hd")]
    assert records[0]["pred_relevant_windows"] == [[1.0, 3.0, 1.0]]
    # 3 clips of 2 s: the best frame of each
    assert records[1]["pred_saliency_scores"] == pytest.approx([0.3, 0.05, 0.4])
    assert "missing.mp4" in records[2]["error"] and records[2]["pred_relevant_windows"] == []

    with pytest.raises(SystemExit):  # qid 8 failed in inference: scored 0, exit status 1
        qvh_evaluate.main([str(tmp_path)])
    scores = load(tmp_path / "metrics.json")
    assert scores["input_report"]["inference_errors"] == 2
    # qid 7: window [1, 3] vs [0, 4]: IoU 0.5, a hit at 0.5 only; qid 8 scores 0
    assert scores["brief"]["MR-full-mAP@0.5"] == 50.0 and scores["brief"]["MR-full-mAP@0.75"] == 0.0
    submission = [json.loads(line) for line in (tmp_path / "qvhighlights_submission.jsonl").read_text().splitlines()]
    assert [line["qid"] for line in submission] == [7, 8]


def test_dense_captioning_records_hold_the_parsed_proposals(tiny_model, bench, tmp_path, monkeypatch):
    anno = tmp_path / "val_1.json"
    anno.write_text(json.dumps({"v1": {"duration": 6, "timestamps": [[0, 2], [3, 5]], "sentences": ["a", "b"]}}))
    spy = GenerateSpy()

    def fake_generate(model, tokenizer, requests, settings, generator=None, on_token=None):
        spy(model, tokenizer, requests, settings)
        return [MatchedAnswer("0 - 2, a man sits. 3 - 5, he stands up.", "", [], [0, 2, 3, 5], [0.0, 2.0, 3.0, 5.0])]

    monkeypatch.setattr(runner, "generate", fake_generate)
    run_benchmark(
        dvc_infer.DENSE_CAPTIONING,
        tiny_model,
        ["--anno_path", str(anno), "--data_path", str(bench / "videos"), "--pred_path", str(tmp_path),
         "--model_path", "unused", "--num_workers", "0"],
    )  # fmt: skip
    assert spy.queries == [dvc_prompts.ACTIVITYNET_QUESTION]
    (record,) = load(tmp_path / "dvc.json")
    assert record["proposals"] == [
        {"sentence": "a man sits.", "timestamp": [0.0, 2.0]},
        {"sentence": "he stands up.", "timestamp": [3.0, 5.0]},
    ]
    assert record["timestamps"] == [[0, 2], [3, 5]] and record["dataset"] == "activitynet"


def test_qvhighlights_with_the_real_model(tiny_model, bench, tmp_path):
    anno = tmp_path / "anno.jsonl"
    anno.write_text(json.dumps(QVH_LINES[0]) + "\n")
    run_qvhighlights(tiny_model, bench, anno, tmp_path, "--greedy", "--max_new_tokens", "6")
    mr, hd = load(tmp_path / "qvhighlights.json")
    assert isinstance(mr["pred_relevant_windows"], list) and isinstance(mr["response"], str)
    assert hd["pred_saliency_scores"] == [] or len(hd["pred_saliency_scores"]) == 3


# --------------------------------------------------------------------------------------------------------------------
# Launcher scripts
# --------------------------------------------------------------------------------------------------------------------


def dry_run(tmp_path, script: str, *args: str, **env: str) -> list[str]:
    """The commands a launcher would run (DRY_RUN=1), one per line."""
    environment = {**os.environ, "SKIP_SETUP": "1", "DRY_RUN": "1", **env}
    result = subprocess.run(
        ["bash", str(ROOT / "scripts" / script), *args], env=environment, capture_output=True, text=True, check=True
    )
    return result.stdout.splitlines()


LAUNCHERS = {  # script: (package, prediction folder)
    "inference.sh": ("etbench", "etbench"),
    "inference_charades.sh": ("charades", "charades_sta"),
    "inference_qvhighlights.sh": ("qvhighlights", "qvhighlights"),
    "inference_youcook2.sh": ("dvc", "youcook2"),
    "inference_activitynet.sh": ("dvc", "activitynet_captions"),
}


@pytest.mark.parametrize("script", LAUNCHERS)
def test_launcher_starts_one_shard_per_visible_gpu(tmp_path, script):
    lines = dry_run(tmp_path, script, "ckpt", "--batch_size", "2", CUDA_VISIBLE_DEVICES="3,5,6")
    shards = sorted(line for line in lines if "--chunk" in line)
    assert len(shards) == 3
    for index, gpu in enumerate(("3", "5", "6")):
        line = next(x for x in shards if f"--index {index} " in x)
        assert line.startswith(f"env CUDA_VISIBLE_DEVICES={gpu} python -m ")
        assert "--chunk 3" in line and "--batch_size 2" in line
        assert "--model_path ckpt" in line and "--device cuda" in line
    package, folder = LAUNCHERS[script]
    assert lines[-1].strip() == f"python -m etchat.eval.{package} ckpt/{folder}"


def test_launcher_uses_one_cpu_process_without_gpus(tmp_path):
    (line,) = dry_run(tmp_path, "inference.sh", CUDA_VISIBLE_DEVICES="", SKIP_METRICS="1")
    assert line.startswith("python -m etchat.eval.etbench.infer ")
    assert "--model_path work_dirs/etchat-stage-3" in line and "--device cpu" in line and "--chunk" not in line
    assert "--anno_path data/etbench/annotations/vid --data_path data/etbench/videos" in line


@pytest.mark.parametrize("script, folder", [("inference.sh", "etbench"), ("inference_charades.sh", "charades_sta")])
def test_launcher_writes_the_predictions_of_a_hub_checkpoint_under_work_dirs(tmp_path, script, folder):
    repo = "PolyU-ChenLab/ETChat-Phi3-Mini-Stage-3"
    infer, score = dry_run(tmp_path, script, repo, "--model_revision", "v1", CUDA_VISIBLE_DEVICES="")
    assert f"--pred_path work_dirs/ETChat-Phi3-Mini-Stage-3/{folder} --model_path {repo} --model_revision v1" in infer
    assert score.strip().endswith(f" work_dirs/ETChat-Phi3-Mini-Stage-3/{folder}")


@pytest.mark.slow
def test_inference_script_on_cpu_with_the_tiny_checkpoint(tiny_checkpoint, bench, tmp_path):
    pred = tmp_path / "pred"
    env = {
        **os.environ,
        "SKIP_SETUP": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        "CUDA_VISIBLE_DEVICES": "",
        "ANNO_PATH": str(bench / "annotations"),
        "VIDEO_PATH": str(bench / "videos"),
        "PRED_PATH": str(pred),
    }
    script = str(ROOT / "scripts" / "inference.sh")
    cmd = ["bash", script, tiny_checkpoint, "--max_new_tokens", "8", "--batch_size", "2"]
    subprocess.run(cmd, env=env, check=True, cwd=tmp_path)
    records = load(pred / "etbench.json")
    assert [{k: v for k, v in r.items() if k != "a"} for r in records] == ALL_SAMPLES
    assert set(load(pred / "metrics.json")) == {"rar", "tvg", "input_report"}


# --------------------------------------------------------------------------------------------------------------------
# Reliability: layouts, bad times, context, failures
# --------------------------------------------------------------------------------------------------------------------


def test_a_run_with_another_shard_layout_replaces_the_old_layouts_files(tiny_model, bench, tmp_path, spy):
    for index in range(2):
        run_bench(tiny_model, bench, tmp_path, "--chunk", "2", "--index", str(index))
    assert prediction_names(tmp_path) == ["etbench_0.json", "etbench_1.json"]
    spy.calls.clear()
    run_bench(tiny_model, bench, tmp_path)
    assert spy.calls == []  # everything was in the journals
    assert prediction_names(tmp_path) == ["etbench.json"]
    assert len(load(tmp_path / "etbench.json")) == len(ALL_SAMPLES)


def write_annotations(tmp_path, samples) -> Path:
    anno = tmp_path / "anno.json"
    anno.write_text(json.dumps(samples))  # json writes NaN as the (non-standard) token NaN, which json reads back
    return anno


def test_times_outside_the_video_or_not_finite_are_errors_naming_the_sample(tiny_model, bench, tmp_path, spy):
    rar, sit, light, door, _ = ALL_SAMPLES
    samples = [
        {**rar, "src": [1000.0]},
        {**sit, "tgt": [[-50, 2]]},
        {**light, "tgt": [[float("nan"), 2]]},
        dict(door),
    ]
    pred = tmp_path / "pred"
    run_bench(tiny_model, bench, pred, "--batch_size", "2", anno=write_annotations(tmp_path, samples))
    records = load(pred / "etbench.json")
    assert "'src' holds 1000.0 s, outside the video (0-4.0 s)" in records[0]["error"]
    assert "'tgt' holds -50 s" in records[1]["error"]
    assert "'tgt' holds nan, not a finite time" in records[2]["error"]
    assert records[2]["tgt"] == [[None, 2]]  # no NaN in any output file
    assert "error" not in records[3] and spy.queries == [door["q"]]
    for path in (pred / "etbench.json", pred / "journal" / "etbench.jsonl"):
        assert "NaN" not in path.read_text()


def test_a_duration_far_from_the_videos_is_a_warning_with_the_sample(tiny_model, bench, tmp_path, spy, caplog):
    sample = {**ALL_SAMPLES[1], "duration": 57.0}  # v1.mp4 lasts 6 s
    run_bench(tiny_model, bench, tmp_path / "pred", anno=write_annotations(tmp_path, [sample]))
    assert "error" not in load(tmp_path / "pred" / "etbench.json")[0]
    assert any("tvg/charades_sta/0" in r.message and "57.0" in r.message for r in caplog.records)


def test_a_prompt_longer_than_the_context_is_a_per_sample_error(tiny_model, bench, tmp_path, spy):
    model, tokenizer = tiny_model
    context = model.config.max_position_embeddings
    long_question = " ".join(["door"] * context)
    samples = [{**ALL_SAMPLES[1], "q": long_question}, dict(ALL_SAMPLES[2])]
    run_bench(tiny_model, bench, tmp_path / "pred", anno=write_annotations(tmp_path, samples))
    first, second = load(tmp_path / "pred" / "etbench.json")
    assert f"more than the model's context of {context}" in first["error"] and "error" not in second
    assert spy.queries == [ALL_SAMPLES[2]["q"]]


def test_the_context_keeps_room_for_the_answer(tiny_model, bench, tmp_path, spy):
    model, tokenizer = tiny_model
    context = model.config.max_position_embeddings
    sample = dict(ALL_SAMPLES[1])  # v1.mp4: 6 frames at 1 fps
    needed = int((tokenize(etbench_infer.build_prompt(sample["q"]), tokenizer) >= 0).sum()) + VIDEO_SECONDS["v1.mp4"]
    anno = write_annotations(tmp_path, [sample])
    run_bench(tiny_model, bench, tmp_path / "fits", "--max_new_tokens", str(context - needed), anno=anno)
    assert "error" not in load(tmp_path / "fits" / "etbench.json")[0]
    run_bench(tiny_model, bench, tmp_path / "tight", "--max_new_tokens", str(context - needed + 1), anno=anno)
    (record,) = load(tmp_path / "tight" / "etbench.json")
    expected = f"room for the answer (--max_new_tokens {context - needed + 1}) need {context + 1} positions"
    assert expected in record["error"]


def run_main(benchmark, argv):
    with pytest.raises(SystemExit) as exit_info:
        runner.main(benchmark, argv)
    return exit_info.value.code


def test_a_shard_whose_videos_are_all_missing_fails_before_loading_the_model(
    tiny_checkpoint, bench, tmp_path, monkeypatch, caplog
):
    monkeypatch.setattr(runner, "load_model", lambda args: pytest.fail("the model must not load"))
    argv = ["--anno_path", str(bench / "annotations"), "--data_path", str(tmp_path / "typo"), "--pred_path",
            str(tmp_path / "pred"), "--model_path", tiny_checkpoint, "--num_workers", "0"]  # fmt: skip
    assert run_main(etbench_infer.ETBENCH, argv) == runner.EXIT_BAD_INPUT
    (line,) = [r.message for r in caplog.records if r.levelname == "ERROR"]
    assert f"none of the 5 videos is under --data_path {tmp_path / 'typo'}" in line


def test_bad_annotations_fail_before_loading_the_model(bench, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(runner, "load_model", lambda args: pytest.fail("the model must not load"))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"idx": 0, "task": "tvg"}]))
    argv = ["--anno_path", str(bad), "--data_path", str(bench / "videos"), "--pred_path", str(tmp_path / "pred"),
            "--model_path", "unused"]  # fmt: skip
    assert run_main(etbench_infer.ETBENCH, argv) == runner.EXIT_BAD_INPUT
    assert any("bad.json: sample #0 lacks source, video, q" in r.message for r in caplog.records)


def test_failed_samples_end_the_run_with_a_non_zero_status_after_writing(
    tiny_checkpoint, tiny_model, bench, tmp_path, monkeypatch
):
    monkeypatch.setattr(runner, "load_model", lambda args: tiny_model)
    monkeypatch.setattr(runner, "generate", GenerateSpy(fail_on="light"))
    argv = ["--anno_path", str(bench / "annotations"), "--data_path", str(bench / "videos"), "--pred_path",
            str(tmp_path), "--model_path", tiny_checkpoint, "--num_workers", "0"]  # fmt: skip
    assert run_main(etbench_infer.ETBENCH, argv) == runner.EXIT_FAILED_SAMPLES
    records = load(tmp_path / "etbench.json")
    assert [r["q"] for r in records if "error" in r] == ["When does the light turn on?"]
    line = runner.failure_line(runner.ShardResult(records, skipped=[]))
    assert line.startswith("1 of 5 samples failed (first: RuntimeError: boom)")
