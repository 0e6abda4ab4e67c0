"""`python -m etchat.data.check`: what a run would lose, reported before it starts."""

import json
import re
from pathlib import Path

import av
import numpy as np
import pytest
from video_utils import write_test_video

from etchat.data import check
from etchat.data.dataset import DataArguments, SupervisedDataset
from etchat.toy.tokenizer import build_tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def write_undecodable_video(path: Path) -> None:
    """An mp4 whose container and metadata are intact (index first) but whose frame data are zeros."""
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=2)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for i in range(8):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * i, np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    data = bytearray(path.read_bytes())
    start = data.index(b"mdat") + 4
    data[start:] = bytes(len(data) - start)
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    write_test_video(root / "good.mp4", 8, 2, size=(32, 32))  # 4 s
    write_test_video(root / "long.mp4", 16, 2, size=(32, 32))  # 8 s
    (root / "broken.mp4").write_bytes(b"not a video")
    write_undecodable_video(root / "zero.mp4")  # 4 s by its metadata
    return root


def sample(video, duration, task="tvg", source="charades", answer="From <vid> to <vid>.", tgt=(1.0, 2.0)):
    return {
        "video": video,
        "duration": duration,
        "task": task,
        "source": source,
        "tgt": list(tgt),
        "conversations": [{"from": "human", "value": "<image>\nWhen?"}, {"from": "gpt", "value": answer}],
    }


TRAINING = [
    sample("good.mp4", 4.0),  # 0 fine
    sample("long.mp4", 8.0, source="long"),  # 1 dropped by max_video_len 5
    sample("good.mp4", 2.0),  # 2 annotation says 2 s, the file 4 s: a warning
    sample("gone.mp4", 4.0),  # 3 missing
    sample("broken.mp4", 4.0),  # 4 unreadable
    sample("zero.mp4", 4.0, task="dvc"),  # 5 opens, does not decode
    sample("good.mp4", 4.0, tgt=[1.0]),  # 6 two <vid> tokens, one time
    sample("good.mp4", 4.0, task="dvc", answer="one two three four five six", tgt=()),  # 7 dropped: 6 words
    sample("long.mp4", 3.0),  # 8 annotated 3 s, the file is 8 s: training's max_video_len rejects it when loading
]


@pytest.fixture
def training_file(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(TRAINING))
    return path


def run_check(capsys, *argv):
    status = check.main([str(a) for a in argv])
    return status, capsys.readouterr().out


def row(report: str, title: str) -> int:
    return int(re.search(rf"^{re.escape(title)}\s+(\d+)", report, re.MULTILINE).group(1))


def test_training_file_report(training_file, videos, tmp_path, capsys):
    flags = ["--max_video_len", "5", "--max_num_words", "5", "--workers", "2"]
    status, report = run_check(capsys, training_file, videos, *flags, "--report", tmp_path / "report.json")
    assert status == 1
    assert row(report, "missing videos or images") == 1 and "sample 3 (id -)" in report
    assert row(report, "unreadable videos") == 1 and "broken.mp4" in report
    assert row(report, "<vid> counts that disagree with the times") == 1
    assert row(report, "videos whose file length a stage's bounds reject") == 1 and "sample 8" in report
    assert row(report, "annotation durations more than 1 s off the file's (warning)") == 2
    assert row(report, "dropped by the filters") == 2
    assert "max_video_len 5.0: 1" in report and "max_num_words 5: 1" in report
    assert re.search(r"^tvg\s+charades\s+4$", report, re.MULTILINE)  # 0, 2, 4 (kept, unreadable) and 8
    assert "RESULT: 4 of 9 samples would be lost; 3 usable, 2 dropped by the filters" in report
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["samples"] == 9 and written["dropped"] == {"max_video_len 5.0": 1, "max_num_words 5": 1}
    assert sorted(p["kind"] for p in written["problems"]) == [
        "duration", "duration", "match_tokens", "missing_media", "unreadable_video", "video_length",
    ]  # fmt: skip

    # Decoding finds the video whose container opens but whose frames do not decode.
    status, report = run_check(capsys, training_file, videos, *flags, "--decode")
    assert row(report, "unreadable videos") == 2 and "zero.mp4" in report
    assert "RESULT: 5 of 9 samples would be lost" in report


def test_training_skips_what_the_check_reports(training_file, videos, capsys):
    status, report = run_check(capsys, training_file, videos, "--max_num_words", "5")
    tokenizer = build_tiny_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<vid>"]})
    args = DataArguments(annotation_path=[str(training_file)], video_folder=str(videos), max_num_words=5)
    dataset = SupervisedDataset(None, tokenizer, args)
    # The start-up checks (structure, <vid> counts, missing files) drop samples 3 and 6; probing finds 4 as well.
    assert [s["video"] for s in dataset.samples] == ["good.mp4", "long.mp4", "good.mp4", "broken.mp4", "zero.mp4",
                                                      "long.mp4"]  # fmt: skip
    assert "RESULT: 3 of 9 samples would be lost; 5 usable, 1 dropped by the filters" in report


def test_a_clean_file_passes(videos, tmp_path, capsys):
    path = tmp_path / "clean.json"
    path.write_text(json.dumps([sample("good.mp4", 4.0), sample("long.mp4", 8.2, task="tal")]))
    status, report = run_check(capsys, path, videos, "--stage", "2")
    assert status == 0 and "RESULT: no sample would be lost; 2 usable, 0 dropped by the filters" in report
    # Stage 3 keeps videos of 5-350 s: dropping the 4 s one is by design, not a loss.
    status, report = run_check(capsys, path, videos, "--stage", "3")
    assert status == 0 and "RESULT: no sample would be lost; 1 usable, 1 dropped by the filters" in report
    assert "min_video_len 5: 1" in report


def test_etbench_annotations(videos, tmp_path, capsys):
    folder = tmp_path / "vid"
    folder.mkdir()
    base = {"task": "tvg", "source": "charades_sta", "duration": 4.0, "q": "When does it happen?", "tgt": [[1, 2]]}
    (folder / "a.json").write_text(json.dumps([dict(base, idx=0, video="good.mp4"), dict(base, idx=1, video="x.mp4")]))
    (folder / "b.json").write_text(json.dumps([dict(base, idx=2, video="good.mp4", q="After <vid>?")]))
    status, report = run_check(capsys, folder, videos)
    assert status == 1
    assert re.search(r"^tvg\s+charades_sta\s+2$", report, re.MULTILINE)
    assert row(report, "missing videos or images") == 1 and "sample tvg/charades_sta/1: no video file" in report
    assert row(report, "<vid> counts that disagree with the times") == 1 and "b.json: sample #0" in report
    assert "RESULT: 2 of 3 samples would be lost" in report


@pytest.mark.parametrize("stage", sorted(check.STAGE_FILTERS))
def test_stage_presets_are_the_stage_scripts_filters(stage):
    script = (ROOT / "scripts" / f"train_stage_{stage}.sh").read_text()
    flags = dict(re.findall(r"--((?:min|max)_(?:video_len|num_words)) (\S+)", script))
    assert {k: float(v) for k, v in flags.items()} == check.STAGE_FILTERS[stage]


def test_time_checks_follow_every_published_time_layout():
    from etchat.data.sample_checks import time_problem

    evs = {"duration": 133.333, "tgt": [[32, 40], [44, 46], [128, 130]]}  # E.T. Bench EVS: a list of spans
    vhd = {"duration": 150.333, "tgt": [[[56, 76], [78, 80]], [[60, 64]], [[56, 58]]]}  # VHD: spans per annotator
    instruct = {"duration": 8.0, "src": [1.0], "tgt": [2.0, 5.0]}  # ET-Instruct: flat times, in token order
    texts = ["<image>\nAfter <vid>, when?", "It appears from <vid> to <vid>."]
    assert [time_problem(evs), time_problem(vhd), time_problem(instruct, texts=texts)] == [None, None, None]
    assert "span [80, 78]" in time_problem({**vhd, "tgt": [[[56, 76], [80, 78]]]})
    assert "'tgt' holds 152 s, outside" in time_problem({**vhd, "tgt": [[[56, 152]]]})  # 1 s of slack
    assert "times 5.0 and 2.0 ends before" in time_problem({**instruct, "tgt": [5.0, 2.0]}, texts=texts)
    assert "'src' holds True, not a finite time" in time_problem({**instruct, "src": [True]})
    assert "'tgt' holds 'x', not a list of times" in time_problem({**instruct, "tgt": "x"})
