"""OpenAI-compatible endpoints on the benchmarks (etchat.eval.api), against a stub server on 127.0.0.1; the answer
rules for free-form answers (etchat.eval.answers)."""

import json

import numpy as np
import pytest

from etchat.eval.answers import first_span, highlight_saliency, span_windows
from etchat.eval.api import client as api_client
from etchat.eval.api import run as api_run
from etchat.eval.api.frames import FrameSampling, evenly_spaced, sample_frames
from etchat.eval.api.protocol import FRAMES_PREAMBLE
from etchat.eval.etbench.compute_metrics import evaluate
from etchat.eval.etbench.predictions import group_samples
from etchat.eval.etbench.report import task_score
from tests.etbench_fixture import good_answer, text_question, write_etbench
from tests.openai_stub import StubServer, question_of
from tests.video_utils import decode_frame_index, write_test_video

TASKS = ("rar", "eca", "rvq", "tvg", "epm", "tal", "evs", "vhd", "tem", "gvq")
UNPARSABLE = "I cannot tell from these frames."
TROUBLE = ({"status": 429, "retry_after": 0}, {"body": "<html>not json</html>"}, {"no_choices": True}, {"status": 500})


def key_text(sample: dict) -> str:
    """What identifies a sample's request at the stub: the end of the preamble (its video's length) and the
    question."""
    return f"{sample['duration']} seconds long video. Try your best to understand it and do not refuse to answer. " + (
        text_question(sample)
    )


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    annotations, videos, samples = write_etbench(tmp_path_factory.mktemp("api_bench"), TASKS)
    return annotations, videos, samples


def answers_and_fixtures(samples):
    """The answer each sample gets, and the stub's replies: trouble first for some, one free-text answer."""
    answers, fixtures = {}, {}
    for position, sample in enumerate(samples):
        answer = UNPARSABLE if (sample["task"], sample["source"]) == ("tvg", "qvhighlights") else good_answer(sample)
        answers[(sample["task"], sample["source"])] = answer
        trouble = [TROUBLE[position % len(TROUBLE)]] if position % 3 == 0 else []
        fixtures[key_text(sample)] = [*trouble, {"answer": answer}]
    return answers, fixtures


def api_args(annotations, videos, pred, base_url, *extra):
    return [
        "--anno_path", str(annotations / "txt"),
        "--data_path", str(videos),
        "--pred_path", str(pred),
        "--model", "stub-model",
        "--base_url", base_url,
        "--api_key", "test",
        "--num_frames", "4",
        "--concurrency", "3",
        "--timeout", "2",
        "--retry_backoff", "0.01",
        "--max_backoff", "0.05",
        *extra,
    ]  # fmt: skip


def test_an_endpoint_run_gives_the_records_and_scores_of_its_answers(bench, tmp_path):
    annotations, videos, samples = bench
    answers, fixtures = answers_and_fixtures(samples)
    pred = tmp_path / "pred"
    with StubServer(fixtures) as server:
        api_run.main(api_args(annotations, videos, pred, server.base_url))
    records = json.loads((pred / "etbench.json").read_text())
    # Same samples, in annotation order, every input field kept, the answer added; trouble was retried away.
    assert [{k: v for k, v in r.items() if k != "a"} for r in records] == [
        {**s, "q": text_question(s)} for s in samples
    ]
    assert [r["a"] for r in records] == [answers[(s["task"], s["source"])] for s in samples]
    assert all(server.requests_for(text_question(s)) >= 1 for s in samples)
    # The endpoint's answers are scored as the scorer scores them; right answers score 1, the free text 0.
    collected = evaluate(group_samples(records))
    assert task_score(collected, "tvg", "F1") == 0.5
    for task, metric in (("rar", "Acc"), ("eca", "Acc"), ("rvq", "Acc"), ("epm", "F1"), ("tal", "F1")):
        assert task_score(collected, task, metric) == 1.0, task
    assert task_score(collected, "gvq", "mRec") == 1.0
    run = json.loads((pred / "run.json").read_text())
    assert run["model"] == {"name": "stub-model", "revision": None, "weights_digest": None, "endpoint": server.base_url}
    assert run["benchmark"] == "E.T. Bench" and run["format"] == 1
    assert run["settings"]["decoding"]["greedy"] is True
    assert run["settings"]["video"]["num_frames"] == 4 and run["settings"]["prompts_digest"].startswith("sha256:")


def test_frames_go_as_images_after_their_times_then_the_papers_preamble(bench, tmp_path):
    annotations, videos, samples = bench
    _, fixtures = answers_and_fixtures(samples)
    with StubServer({k: v[-1:] for k, v in fixtures.items()}) as server:
        api_run.main([*api_args(annotations, videos, tmp_path / "a", server.base_url), "--index", "0", "--chunk", "8"])
        timed = server.requests[0]
    with StubServer({k: v[-1:] for k, v in fixtures.items()}) as server:
        api_run.main([*api_args(annotations, videos, tmp_path / "b", server.base_url), "--no_frame_times"])
        plain = server.requests[0]
    content = timed["messages"][0]["content"]
    kinds = [part["type"] for part in content]
    assert kinds == ["text", "image_url"] * 4 + ["text"]
    labels = [part["text"] for part in content[:-1] if part["type"] == "text"]
    assert all(label.startswith("Frame at ") and label.endswith("s:") for label in labels)
    sample = next(s for s in samples if text_question(s) in question_of(timed))
    preamble = FRAMES_PREAMBLE.format(num_frames=4, duration=sample["duration"])
    assert content[-1]["text"] == f"{preamble} {text_question(sample)}"
    assert all(
        part["image_url"]["url"].startswith("data:image/jpeg;base64,") for part in content if "image_url" in part
    )
    assert [part["type"] for part in plain["messages"][0]["content"]] == ["image_url"] * 4 + ["text"]
    assert timed["temperature"] == 0 and timed["max_tokens"] == 2048 and timed["model"] == "stub-model"


def test_a_failing_request_is_an_error_record_and_a_rerun_retries_only_it(bench, tmp_path):
    annotations, videos, samples = bench
    answers, fixtures = answers_and_fixtures(samples)
    broken = samples[1]
    pred = tmp_path / "pred"
    always_500 = {**fixtures, key_text(broken): [{"status": 500}]}
    with StubServer(always_500) as server, pytest.raises(SystemExit) as exit_info:
        api_run.main([*api_args(annotations, videos, pred, server.base_url), "--max_retries", "2"])
    assert exit_info.value.code == 1
    assert server.requests_for(text_question(broken)) == 3  # the first try and two retries
    records = {r["task"] + r["source"]: r for r in json.loads((pred / "etbench.json").read_text())}
    failed = records[broken["task"] + broken["source"]]
    assert "InternalServerError (HTTP 500)" in failed["error"] and failed["a"] == ""
    with StubServer(fixtures) as server:
        api_run.main(api_args(annotations, videos, pred, server.base_url))
    assert len(server.requests) == 1 and server.requests_for(text_question(broken)) == 1
    records = json.loads((pred / "etbench.json").read_text())
    assert not any("error" in r for r in records) and len(records) == len(samples)


def test_a_timeout_is_retried(bench, tmp_path):
    annotations, videos, samples = bench
    sample = samples[0]
    fixtures = {key_text(sample): [{"sleep": 1.5}, {"answer": "(A)"}]}
    with StubServer(fixtures) as server:
        args = api_args(annotations, videos, tmp_path / "p", server.base_url)
        api_run.main([*args, "--timeout", "0.5", "--chunk", str(len(samples))])
    records = json.loads((tmp_path / "p" / "etbench_0.json").read_text())
    assert records[0]["a"] == "(A)" and server.requests_for(text_question(sample)) == 2


def test_an_endpoint_that_refuses_every_request_stops_the_run(bench, tmp_path, caplog):
    annotations, videos, _ = bench
    with StubServer({}, model="another-model") as server, pytest.raises(SystemExit) as exit_info:
        api_run.main([*api_args(annotations, videos, tmp_path / "p", server.base_url), "--concurrency", "1"])
    assert exit_info.value.code == 2
    assert "refuses the requests" in caplog.text and "NotFoundError (HTTP 404)" in caplog.text


def test_vid_annotations_and_a_folder_of_other_settings_are_refused(bench, tmp_path, caplog):
    annotations, videos, samples = bench
    vid_args = ["--anno_path", str(annotations / "vid"), *api_args(annotations, videos, tmp_path / "p", "x")[2:]]
    with pytest.raises(SystemExit) as exit_info:
        api_run.main(vid_args)
    assert exit_info.value.code == 2 and "annotations/txt" in caplog.text
    _, fixtures = answers_and_fixtures(samples)
    with StubServer({k: v[-1:] for k, v in fixtures.items()}) as server:
        api_run.main([*api_args(annotations, videos, tmp_path / "q", server.base_url), "--chunk", "8"])
        with pytest.raises(SystemExit) as exit_info:
            api_run.main([*api_args(annotations, videos, tmp_path / "q", server.base_url), "--num_frames", "6"])
    assert exit_info.value.code == 2 and "another settings" in caplog.text


def test_the_subset_keeps_only_its_samples(bench, tmp_path, monkeypatch):
    annotations, videos, samples = bench
    chosen = {samples[3]["task"]: {samples[3]["source"]: [samples[3]["idx"]]}}
    monkeypatch.setattr(api_run, "load_subset", lambda: chosen)
    _, fixtures = answers_and_fixtures(samples)
    with StubServer(fixtures) as server:
        api_run.main([*api_args(annotations, videos, tmp_path / "p", server.base_url), "--subset"])
    records = json.loads((tmp_path / "p" / "etbench.json").read_text())
    assert [(r["task"], r["source"]) for r in records] == [(samples[3]["task"], samples[3]["source"])]


def test_video_input_sends_the_file_and_the_question_alone(bench, tmp_path):
    annotations, videos, samples = bench
    sample = samples[0]
    with StubServer({text_question(sample): [{"answer": "(A)"}]}) as server:
        api_run.main([*api_args(annotations, videos, tmp_path / "p", server.base_url), "--input", "video",
                      "--chunk", str(len(samples))])  # fmt: skip
    content = server.requests[0]["messages"][0]["content"]
    assert content[0]["type"] == "video_url" and content[0]["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert content[1] == {"type": "text", "text": text_question(sample)}


# --------------------------------------------------------------------------------------------------------------------
# The other benchmarks through the same runner
# --------------------------------------------------------------------------------------------------------------------


def test_charades_qvhighlights_and_dense_captioning_records_from_text(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_test_video(videos / "vidA.mp4", num_frames=16, fps=2, size=(32, 32))
    (tmp_path / "charades.txt").write_text("vidA 1.0 3.0##a person sits down.\n")
    qvh_line = {"qid": 7, "query": "a dog runs", "vid": "vidA", "duration": 8, "relevant_windows": [[2, 4]],
                "relevant_clip_ids": [1], "saliency_scores": [[4, 4, 4]]}  # fmt: skip
    (tmp_path / "qvh.jsonl").write_text(json.dumps(qvh_line) + "\n")
    anet = {"vidA": {"duration": 8.0, "timestamps": [[0, 3], [3, 8]], "sentences": ["a dog runs.", "it sleeps."]}}
    (tmp_path / "anet.json").write_text(json.dumps(anet))
    fixtures = {
        "Localize the video moment": [{"status": 503}, {"answer": "It happens in 1.0 - 3.0 seconds."}],
        "find a visual event": [{"answer": "The event happens in 2 - 4, then 5 - 6."}],
        "find the highlight moment": [{"answer": "The highlight moment happens in 3.0 seconds."}],
        "densely describe": [{"answer": "0 - 3 seconds, a dog runs. 3 - 8 seconds, it sleeps."}],
    }
    with StubServer(fixtures) as server:
        for benchmark, anno in (("charades", "charades.txt"), ("qvhighlights", "qvh.jsonl"), ("dvc", "anet.json")):
            api_run.main([
                "--benchmark", benchmark, "--anno_path", str(tmp_path / anno), "--data_path", str(videos),
                "--pred_path", str(tmp_path / benchmark), "--model", "m", "--base_url", server.base_url,
                "--api_key", "k", "--num_frames", "3", "--retry_backoff", "0.01",
            ])  # fmt: skip
    (charades,) = json.loads((tmp_path / "charades" / "charades_sta.json").read_text())
    assert charades["pred"] == [1.0, 3.0] and charades["duration"] == 8.0
    mr, hd = json.loads((tmp_path / "qvhighlights" / "qvhighlights.json").read_text())
    assert mr["pred_relevant_windows"] == [[2.0, 4.0, 1.0], [5.0, 6.0, 0.5]]
    assert hd["pred_saliency_scores"] == [0.5, 1.0, 0.5, 1 / 3]
    (dvc,) = json.loads((tmp_path / "dvc" / "dvc.json").read_text())
    assert [p["timestamp"] for p in dvc["proposals"]] == [[0.0, 3.0], [3.0, 8.0]]
    # The benchmarks' own scorers take these folders.
    from etchat.eval.charades.metrics import grounding_scores

    assert grounding_scores([charades])["mIoU"] == pytest.approx(1.0)
    from etchat.eval.qvhighlights import evaluate as qvh_evaluate

    assert qvh_evaluate.main([str(tmp_path / "qvhighlights")])["brief"]["MR-full-R1@0.5"] == 100.0


# --------------------------------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------------------------------


def test_answer_rules_for_free_form_answers():
    assert first_span("The event happens in 12.5 - 20 seconds, and again 30 - 40.") == [12.5, 20.0]
    assert first_span("It starts at 3 seconds.\nIt ends at 9 seconds.") == [3.0, 9.0]  # sentences end at ! ? newline
    assert first_span("No idea.") is None
    assert span_windows("From 5 to 2, then 7 to 9.") == [[2.0, 5.0, 1.0], [7.0, 9.0, 0.5]]
    assert highlight_saliency("Around 4.5 seconds.", 10) == [1 / 3, 1 / 2, 1.0, 1 / 2, 1 / 3]
    assert highlight_saliency("Nothing.", 9) == []


def test_frames_are_spread_evenly_and_carry_their_times(tmp_path):
    path = tmp_path / "v.mp4"
    write_test_video(path, num_frames=20, fps=2, size=(32, 48))  # 10 s, frame i shows colour i
    frames = sample_frames(path, FrameSampling(num_frames=4, short_side=None))
    assert frames.duration == 10.0 and len(frames.images) == 4
    assert frames.times == [0.0, 3.0, 6.5, 9.5]  # frames 0, 6.33, 12.67 and 19 of 20, rounded
    import base64
    import io

    from PIL import Image

    shown = [decode_frame_index(np.asarray(Image.open(io.BytesIO(base64.b64decode(u.split(",")[1]))))) for u in
             frames.images]  # fmt: skip
    assert [index / 2 for index in shown] == frames.times  # each image is the frame of its time
    by_rate = sample_frames(path, FrameSampling(num_frames=None, fps=1, max_frames=3))
    assert len(by_rate.images) == 3 and by_rate.times[0] == 0.0
    assert evenly_spaced(10, 4) == [0, 3, 6, 9] and evenly_spaced(3, 8) == [0, 1, 2]


def test_rate_limiter_spaces_request_starts():
    now = [0.0]
    waits = []

    def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    limiter = api_client.RateLimiter(120, clock=lambda: now[0], sleep=sleep)  # one start every 0.5 s
    for _ in range(4):
        limiter.wait()
    assert waits == [0.5, 0.5, 0.5]


def test_backoff_doubles_and_honours_retry_after():
    import random

    policy = api_client.RetryPolicy(max_retries=5, backoff=1.0, max_backoff=6.0)
    rng = random.Random(0)
    delays = [policy.delay(attempt, None, rng) for attempt in range(5)]
    assert all(0.5 * min(6, 2**a) <= d <= min(6, 2**a) for a, d in enumerate(delays))
    assert policy.delay(0, 30.0, rng) == 30.0


def test_reply_without_text_is_malformed():
    with pytest.raises(api_client.MalformedReply):
        api_client.answer_text(type("Reply", (), {"choices": []})())


def test_help_lists_the_endpoint_options(capsys):
    with pytest.raises(SystemExit):
        api_run.main(["--help"])
    out = capsys.readouterr().out
    for flag in ("--concurrency", "--requests_per_minute", "--max_retries", "--num_frames", "--no_frame_times"):
        assert flag in out
