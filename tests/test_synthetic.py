"""Tests of the synthetic data set generator: pixels agree with the annotations, formats are E.T. Bench's."""

import hashlib
import json
import os
import re

import av
import numpy as np
import pytest
from PIL import Image

from etchat.eval.etbench.tasks import TASKS as ETBENCH_TASKS
from etchat.eval.qvhighlights.formats import parse_ground_truth
from etchat.toy.synthetic import __main__ as synthetic_cli
from etchat.toy.synthetic import dataset as synthetic
from etchat.toy.synthetic.benchmarks import DVC_ANNOTATION, QVHIGHLIGHTS_ANNOTATION
from etchat.toy.synthetic.dataset import SyntheticConfig

TINY = dict(num_train_videos=4, num_test_videos=2, num_images=3, fps=3, size=64, min_len=20, max_len=25)


def generate(out, **fields):
    return synthetic.generate(out, SyntheticConfig(**{**TINY, **fields}), workers=1)


# What each colour name means, written independently of the generator's RGB table: a coarse rule on decoded pixels.
COLOUR_RULES = {
    "red": lambda r, g, b: (r > 150) & (g < 90) & (b < 90),
    "green": lambda r, g, b: (g > 130) & (r < 100) & (b < 100),
    "blue": lambda r, g, b: (b > 150) & (r < 100) & (g < 130),
    "yellow": lambda r, g, b: (r > 170) & (g > 150) & (b < 100),
    "purple": lambda r, g, b: (r > 120) & (b > 140) & (g < 100),
}
# A named shape of diameter >= 16 px (a quarter of a 64 px frame, halved) is drawn at half that size when it appears:
# an 8 px triangle covers about 32 px, of which 4:2:0 chroma subsampling leaves as few as 16 of its colour in a
# 64 px frame. Compression noise at a colour edge covers a few.
MIN_VISIBLE_PIXELS = 10
MAX_ABSENT_PIXELS = 2
# The E.T. Bench scorer's first timestamp rule: "a - b" pairs.
PAIR_PATTERN = re.compile(r"(\d+\.*\d*)\s*-\s*(\d+\.*\d*)")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    manifest = generate(out, seed=0)
    return out, manifest


def load(out, name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)


def decode(path):
    with av.open(path) as container:
        stream = container.streams.video[0]
        fps = float(stream.average_rate)
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)], fps


def colour_pixels(frame, colour):
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return int(COLOUR_RULES[colour](r, g, b).sum())


def grounding_queries(out):
    """(video, colour, start, end) of every grounding question, from stage 3 and from the test split."""
    pattern = re.compile(r"When does the (\w+) (\w+) appear")
    queries = []
    for sample in load(out, "stage3.json"):
        if sample["task"] == "tvg":
            colour = pattern.search(sample["conversations"][0]["value"]).group(1)
            queries.append((sample["video"], colour, *sample["tgt"]))
    for sample in load(out, "annotations/vid/etbench_tvg_synthetic.json"):
        colour = pattern.search(sample["q"]).group(1)
        queries.append((sample["video"], colour, *sample["tgt"]))  # E.T. Bench's tvg tgt is one flat [s, e]
    for line in qvhighlights_lines(out):
        ((start, end),) = line["relevant_windows"]
        queries.append((f"videos/test/{line['vid']}.mp4", line["query"].split()[1], start, end))
    return queries


def qvhighlights_lines(out):
    with open(os.path.join(out, QVHIGHLIGHTS_ANNOTATION)) as f:
        return [json.loads(line) for line in f]


def test_grounded_object_is_visible_exactly_inside_its_span(dataset):
    out, _ = dataset
    queries = grounding_queries(out)
    assert {video.split("/")[1] for video, *_ in queries} == {"train", "test"}
    for video, colour, start, end in queries:
        frames, fps = decode(os.path.join(out, video))
        for k, frame in enumerate(frames):
            count = colour_pixels(frame, colour)
            if start <= k / fps <= end:
                assert count >= MIN_VISIBLE_PIXELS, f"{video} {colour} missing at {k / fps:.2f}s ({count} px)"
            else:
                assert count <= MAX_ABSENT_PIXELS, f"{video} {colour} present at {k / fps:.2f}s ({count} px)"


def test_grounded_object_grows_over_its_span(dataset):
    # The shape is drawn at half its size when it appears and at full size when it goes: area ratio about 1:4.
    out, _ = dataset
    for video, colour, start, end in grounding_queries(out):
        frames, fps = decode(os.path.join(out, video))
        first, last = (colour_pixels(frames[round(t * fps)], colour) for t in (start, end))
        assert 2 * first < last, f"{video} {colour}: {first} px at {start}s, {last} px at {end}s"


def test_video_length_and_rate(dataset):
    out, _ = dataset
    for sample in load(out, "annotations/vid/etbench_dvc_synthetic.json"):
        frames, fps = decode(os.path.join(out, sample["video"]))
        assert fps == 3
        assert frames[0].shape == (64, 64, 3)
        assert len(frames) == sample["duration"] * 3
        assert 20 <= sample["duration"] <= 25


def test_image_caption_names_colours_where_they_are(dataset):
    out, _ = dataset
    quadrants = {"top left": (0, 0), "top right": (0, 1), "bottom left": (1, 0), "bottom right": (1, 1)}
    images = [s for s in load(out, "stage1.json") if "image" in s]
    assert len(images) == 3
    for sample in images:
        frame = np.asarray(Image.open(os.path.join(out, sample["image"])).convert("RGB"))
        caption = sample["conversations"][1]["value"]
        named = re.findall(r"a (\w+) (\w+) in the (\w+ \w+)", caption)
        assert named, caption
        for colour, _, where in named:
            row, col = quadrants[where]
            quadrant = frame[row * 32 : row * 32 + 32, col * 32 : col * 32 + 32]
            assert colour_pixels(quadrant, colour) >= MIN_VISIBLE_PIXELS, (sample["image"], colour, where)
            assert colour_pixels(frame, colour) == colour_pixels(quadrant, colour), (sample["image"], colour)


def test_vid_tokens_match_src_and_tgt(dataset):
    out, _ = dataset
    for name in ("stage1.json", "stage2.json", "stage3.json"):
        for sample in load(out, name):
            count = sum(turn["value"].count("<vid>") for turn in sample["conversations"])
            assert count == len(sample.get("src", [])) + len(sample.get("tgt", [])), (name, sample["id"])
            assert [t["from"] for t in sample["conversations"]] == ["human", "gpt"] * (
                len(sample["conversations"]) // 2
            )
    for task in synthetic.ETBENCH_TASKS:
        for sample in load(out, synthetic.bench_annotation_path(task)):
            assert sample["q"].count("<vid>") == len(sample.get("src", [])), (task, sample["idx"])


def test_stage_formats(dataset):
    out, _ = dataset
    stage1 = load(out, "stage1.json")
    assert all(s["conversations"][0]["value"] == "<image>" and len(s["conversations"]) == 2 for s in stage1)
    assert {("image" in s, "video" in s) for s in stage1} == {(True, False), (False, True)}
    stage2 = load(out, "stage2.json")
    assert any("image" not in s and "video" not in s for s in stage2), "expected some text-only samples"
    for sample in stage2 + load(out, "stage3.json"):
        has_media = "image" in sample or "video" in sample
        assert sample["conversations"][0]["value"].startswith("<image>\n") == has_media, sample["id"]
        assert sum(turn["value"].count("<image>") for turn in sample["conversations"]) == int(has_media)
    for sample in stage1 + stage2 + load(out, "stage3.json"):
        media = sample.get("image") or sample.get("video")
        assert media is None or os.path.isfile(os.path.join(out, media)), sample["id"]


def fill_times(text, times):
    """What inference returns: each <vid> replaced by its time."""
    for t in times:
        text = text.replace("<vid>", str(t), 1)
    return text


def test_answers_parse_with_the_benchmark_rules(dataset):
    out, _ = dataset
    for sample in load(out, "stage3.json"):
        answer = sample["conversations"][1]["value"]
        if sample["task"] in ("tvg", "tal", "dvc", "qvh_mr", "densecap"):
            pairs = [[float(a), float(b)] for a, b in PAIR_PATTERN.findall(fill_times(answer, sample["tgt"]))]
            assert pairs == [sample["tgt"][i : i + 2] for i in range(0, len(sample["tgt"]), 2)], sample["id"]
        elif sample["task"] in ("vhd", "qvh_hd"):
            assert re.findall(r"\d+", fill_times(answer, sample["tgt"])) == [str(sample["tgt"][0])]
        else:
            letter = re.match(r"Best Option: \(([A-D])\)", answer).group(1)
            question = sample["conversations"][0]["value"]
            option = re.search(rf"\({letter}\) (.*)", question).group(1)
            assert answer.endswith(f"({letter})") or answer.endswith(option), sample["id"]


def test_benchmark_annotations(dataset):
    out, _ = dataset
    for task in synthetic.ETBENCH_TASKS:
        samples = load(out, f"annotations/vid/etbench_{task}_synthetic.json")
        assert samples and [s["idx"] for s in samples] == list(range(len(samples)))
        for s in samples:
            assert s["version"] == 1.0 and s["task"] == task and s["source"] == "synthetic"
            assert s["video"].startswith("videos/test/") and os.path.isfile(os.path.join(out, s["video"]))
            last = s["duration"] - 1
            if task in ("tvg", "tal", "dvc"):
                assert "<start time> - <end time>" in s["q"]
            if task in ("tal", "dvc"):
                assert all(0 <= a < b <= last for a, b in s["tgt"])
            if task == "tvg":  # one flat [start, end], as the official scorer reads it
                start, end = s["tgt"]
                assert 0 <= start < end <= last
            if task == "dvc":
                assert len(s["g"]) == len(s["tgt"]) and all(len(c) > 5 for c in s["g"])
            if task == "vhd":
                assert "<time>" in s["q"]
                assert all(0 <= a < b <= last for windows in s["tgt"] for a, b in windows)
            if ETBENCH_TASKS[task].options:
                assert 0 <= s["p"] < len(s["o"]) == 4 and "(A)" in s["q"] and "(D)" in s["q"]
                assert all(0 <= t <= last for t in s["src"])


def test_qvhighlights_and_dense_caption_test_files(dataset):
    out, manifest = dataset
    lines = qvhighlights_lines(out)
    queries = parse_ground_truth(lines, QVHIGHLIGHTS_ANNOTATION)  # the scorer's checks of the Moment-DETR format
    assert [line["qid"] for line in lines] == list(range(manifest["counts"]["test_videos"]))
    references = load(out, DVC_ANNOTATION)
    etbench_dvc = {s["video"]: s for s in load(out, "annotations/vid/etbench_dvc_synthetic.json")}
    for line, query in zip(lines, queries):
        ((start, end),) = line["relevant_windows"]
        # the query is the caption of an event of that span; every clip showing a second of it is rated, 1-4
        events = references[line["vid"]]
        assert [start, end] in events["timestamps"] and line["query"] in events["sentences"]
        visible = [clip for clip in range(query.num_clips) if {2 * clip, 2 * clip + 1} & set(range(start, end + 1))]
        assert line["relevant_clip_ids"] == visible
        assert all(1 <= rating <= 4 for ratings in line["saliency_scores"] for rating in ratings)
        # the clip holding the middle of the span is rated highest by the first annotator
        best = line["relevant_clip_ids"][int(np.argmax([r[0] for r in line["saliency_scores"]]))]
        assert abs(2 * best + 1 - (start + end) / 2) <= 2
    for video, entry in references.items():  # the same events as the E.T. Bench dense-captioning samples
        sample = etbench_dvc[f"videos/test/{video}.mp4"]
        assert entry["timestamps"] == sample["tgt"] and entry["sentences"] == sample["g"]


def test_multiple_choice_answer_is_true_in_the_video(dataset):
    """The colour of the correct 'rar'/'rvq' option is on screen at the asked second (checked on the decoded frame)."""
    out, _ = dataset
    rar = load(out, "annotations/vid/etbench_rar_synthetic.json")
    rvq = load(out, "annotations/vid/etbench_rvq_synthetic.json")
    for s in rar + rvq:
        frames, fps = decode(os.path.join(out, s["video"]))
        colour = s["o"][s["p"]].split()[1] if s["task"] == "rar" else s["o"][s["p"]]
        assert colour_pixels(frames[round(s["src"][0] * fps)], colour) >= MIN_VISIBLE_PIXELS, (s["task"], s["idx"])


def test_train_and_test_videos_are_disjoint(dataset):
    out, _ = dataset
    train = {
        s["video"] for name in ("stage1.json", "stage2.json", "stage3.json") for s in load(out, name) if "video" in s
    }
    test = {s["video"] for task in synthetic.ETBENCH_TASKS for s in load(out, synthetic.bench_annotation_path(task))}
    test |= {f"videos/test/{line['vid']}.mp4" for line in qvhighlights_lines(out)}
    test |= {f"videos/test/{video}.mp4" for video in load(out, DVC_ANNOTATION)}
    assert all(v.startswith("videos/train/") for v in train) and all(v.startswith("videos/test/") for v in test)
    assert train.isdisjoint(test)
    assert len(train) == 4 and len(test) == 2

    def digest(video):
        with open(os.path.join(out, video), "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    assert {digest(v) for v in train}.isdisjoint({digest(v) for v in test})


def snapshot(out):
    files = {}
    for root, _, names in os.walk(out):
        for name in names:
            if name != "manifest.json":
                with open(os.path.join(root, name), "rb") as f:
                    files[os.path.relpath(os.path.join(root, name), out)] = hashlib.sha256(f.read()).hexdigest()
    return files


def test_same_seed_same_data_other_seed_other_data(dataset, tmp_path):
    out, _ = dataset
    again = generate(str(tmp_path / "again"), seed=0)
    assert snapshot(str(tmp_path / "again")) == snapshot(out)
    assert again["counts"] == dataset[1]["counts"]
    generate(str(tmp_path / "other"), seed=1)
    assert load(str(tmp_path / "other"), "stage3.json") != load(out, "stage3.json")


def test_rerun_reuses_files_and_new_arguments_regenerate(tmp_path):
    out = str(tmp_path / "data")
    first = generate(out, seed=0)
    video = os.path.join(out, "videos/train/train_00000.mp4")
    stamp = os.stat(video).st_mtime_ns
    assert generate(out, seed=0) == first
    assert os.stat(video).st_mtime_ns == stamp

    second = generate(out, seed=0, num_train_videos=2)
    assert second["counts"]["train_videos"] == 2
    assert sorted(os.listdir(os.path.join(out, "videos/train"))) == ["train_00000.mp4", "train_00001.mp4"]


def test_corpus_texts_cover_all_text(dataset):
    out, _ = dataset
    texts = synthetic.corpus_texts(out)
    joined = "\n".join(texts)
    for sample in load(out, "annotations/vid/etbench_dvc_synthetic.json"):
        assert sample["q"] in texts and all(caption in texts for caption in sample["g"])
    for sample in load(out, "stage3.json"):
        assert sample["conversations"][1]["value"] in texts
    assert "Best Option" in joined


def test_bad_arguments_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="size"):
        generate(str(tmp_path), size=63)
    with pytest.raises(ValueError, match="min_len"):
        generate(str(tmp_path), min_len=30, max_len=20)
    with pytest.raises(ValueError, match="tasks"):
        generate(str(tmp_path), tasks=("tvg", "nope"))


def test_command_line_help():
    with pytest.raises(SystemExit) as exit_info:
        synthetic_cli.parse_args(["--help"])
    assert exit_info.value.code == 0
