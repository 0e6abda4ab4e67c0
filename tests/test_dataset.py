"""Training data: the dataset on tiny annotation files with generated videos/images, the collator and the sampler."""

import json
import logging
import os
import random
from fractions import Fraction

import av
import numpy as np
import pytest
import torch
from PIL import Image
from transformers import HfArgumentParser

from etchat.constants import CLIP_MEAN, CLIP_STD, IGNORE_INDEX, VIDEO_TOKEN_INDEX
from etchat.data.collator import DataCollator
from etchat.data.dataset import DataArguments, SupervisedDataset
from etchat.data.sampler import ModalityGroupedSampler, modality_grouped_indices, split_balanced
from etchat.model.loading import add_match_token, load_etchat
from etchat.toy.tokenizer import build_tiny_tokenizer

VIDEO_FPS = 3


def write_video(path, num_frames, fps=VIDEO_FPS, size=32):
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(num_frames):
            pixels = np.full((size, size, 3), 12 * i, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<vid>"]})
    return tok


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    (root / "videos").mkdir()
    (root / "images").mkdir()
    write_video(root / "videos" / "short.mp4", 9)  # 3 s -> 3 frames at 1 fps, tags 0, 1, 2
    write_video(root / "videos" / "long.mp4", 18)  # 6 s
    (root / "videos" / "broken.mp4").write_bytes(b"this is not a video")
    red = np.zeros((32, 64, 3), dtype=np.uint8)
    red[..., 0] = 255
    Image.fromarray(red).save(root / "images" / "red.png")
    return root


def human(text):
    return {"from": "human", "value": text}


def gpt(text):
    return {"from": "gpt", "value": text}


VIDEO_SAMPLE = {
    "video": "short.mp4",
    "duration": 3.0,
    "src": [1.0],
    "tgt": [0.0, 2.0],
    "source": "charades",
    "task": "tvg",
    "conversations": [human("<image>\nWhen does <vid> happen again?"), gpt("From <vid> to <vid>.")],
}
IMAGE_SAMPLE = {
    "id": "img-1",
    "image": "red.png",
    "source": "coco",
    "conversations": [human("What colour is it?"), gpt("It is red.")],
}
TEXT_SAMPLE = {"source": "sharegpt", "conversations": [human("Say hi."), gpt("Hi there.")]}
MULTI_TURN_QUESTIONS = ["What is shown?", "When is it brightest?"]
MULTI_TURN_ANSWERS = ["A grey screen getting brighter.", "From <vid> to <vid>."]
MULTI_TURN_SAMPLE = {
    "id": "multi-1",
    "video": "short.mp4",
    "duration": 3.0,
    "tgt": [0.0, 2.0],
    "conversations": [
        human(MULTI_TURN_QUESTIONS[0]),
        gpt(MULTI_TURN_ANSWERS[0]),
        human(MULTI_TURN_QUESTIONS[1]),
        gpt(MULTI_TURN_ANSWERS[1]),
    ],
}


def write_annotations(path, samples):
    path.write_text(json.dumps(samples))
    return str(path)


def make_dataset(tmp_path, media, tokenizer, samples, **kwargs):
    args = DataArguments(
        annotation_path=[write_annotations(tmp_path / "anno.json", samples)],
        image_folder=str(media / "images"),
        video_folder=str(media / "videos"),
        **kwargs,
    )
    return SupervisedDataset(None, tokenizer, args)


def trained_text(sample, tokenizer):
    return tokenizer.decode([t for t in sample["labels"].tolist() if t != IGNORE_INDEX])


# ---- dataset --------------------------------------------------------------------------------------------------


def test_video_image_and_text_samples(tmp_path, media, tokenizer):
    dataset = make_dataset(tmp_path, media, tokenizer, [VIDEO_SAMPLE, IMAGE_SAMPLE, TEXT_SAMPLE])
    assert len(dataset) == 3
    assert dataset.modalities == ["video", "image", "text"]

    video = dataset[0]
    assert video["modality"] == "video"
    assert video["image"].shape == (3, 3, 224, 224) and video["image"].dtype == torch.float32
    assert video["query"] == "When does <vid> happen again?"
    assert video["src"] == [1.0] and video["tgt"] == [0.0, 2.0]
    assert video["tag"] is None  # tags are passed only with use_time_tag
    assert video["input_ids"].tolist().count(VIDEO_TOKEN_INDEX) == 1
    assert video["input_ids"].tolist().count(tokenizer.convert_tokens_to_ids("<vid>")) == 3
    assert trained_text(video, tokenizer) == "From <vid> to <vid>.<|end|>"
    assert video["length"] == video["input_ids"].numel()

    image = dataset[1]
    assert image["modality"] == "image" and image["image"].shape == (1, 3, 224, 224)
    assert image["query"] == "What colour is it?"
    assert image["tag"] is None and image["src"] is None and image["tgt"] is None
    assert image["input_ids"].tolist().count(VIDEO_TOKEN_INDEX) == 1  # the placeholder was inserted
    assert trained_text(image, tokenizer) == "It is red.<|end|>"

    text = dataset[2]
    assert text["modality"] == "text" and text["image"] is None
    assert VIDEO_TOKEN_INDEX not in text["input_ids"].tolist()
    assert text["query"] == ""  # no video, no Q-Former instruction
    assert trained_text(text, tokenizer) == "Hi there.<|end|>"


def test_video_cache_decodes_a_shared_video_once_and_drops_the_least_recent(tmp_path, media, tokenizer, monkeypatch):
    import etchat.data.video as video_module

    decoded = []
    real_load_video = video_module.load_video

    def counting_load_video(path, **kwargs):
        decoded.append(os.path.basename(path))
        return real_load_video(path, **kwargs)

    samples = [VIDEO_SAMPLE, dict(VIDEO_SAMPLE, src=[2.0]), dict(VIDEO_SAMPLE, video="long.mp4", duration=6.0)]
    uncached = make_dataset(tmp_path, media, tokenizer, samples)
    expected = [uncached[i]["image"] for i in (0, 1, 2, 0)]
    monkeypatch.setattr(video_module, "load_video", counting_load_video)

    cached = make_dataset(tmp_path, media, tokenizer, samples, video_cache_size=1)
    items = [cached[i] for i in (0, 1, 2, 0)]
    # short.mp4 once for samples 0 and 1; long.mp4 evicts it, so sample 0 decodes it again.
    assert decoded == ["short.mp4", "long.mp4", "short.mp4"]
    assert all(torch.equal(item["image"], frames) for item, frames in zip(items, expected))
    assert items[1]["src"] == [2.0]

    decoded.clear()
    off = make_dataset(tmp_path, media, tokenizer, samples)
    _ = [off[i] for i in (0, 1)]
    assert decoded == ["short.mp4", "short.mp4"] and not off.video_cache


def test_multi_turn_video_sample_shows_the_video_every_turn(tmp_path, media, tokenizer):
    item = make_dataset(tmp_path, media, tokenizer, [MULTI_TURN_SAMPLE])[0]
    assert item["input_ids"].tolist().count(VIDEO_TOKEN_INDEX) == 2
    assert item["query"] == MULTI_TURN_QUESTIONS
    assert trained_text(item, tokenizer) == "".join(a + "<|end|>" for a in MULTI_TURN_ANSWERS)
    assert item["tgt"] == [0.0, 2.0]

    gathered = make_dataset(tmp_path, media, tokenizer, [MULTI_TURN_SAMPLE], gather_conv_query=True)[0]
    assert gathered["input_ids"].tolist().count(VIDEO_TOKEN_INDEX) == 1
    assert gathered["query"] == " ".join(MULTI_TURN_QUESTIONS)
    assert trained_text(gathered, tokenizer) == trained_text(item, tokenizer)


def test_plain_template_trains_the_caption(tmp_path, media, tokenizer):
    sample = {"image": "red.png", "conversations": [human("<image>\nDescribe."), gpt("A red picture")]}
    item = make_dataset(tmp_path, media, tokenizer, [sample], conv_type="plain")[0]
    assert item["input_ids"][:2].tolist() == [tokenizer.bos_token_id, VIDEO_TOKEN_INDEX]
    assert item["query"] == "Describe."
    assert trained_text(item, tokenizer).strip() == "A red picture"


def test_time_tags(tmp_path, media, tokenizer):
    item = make_dataset(tmp_path, media, tokenizer, [VIDEO_SAMPLE], use_time_tag=True)[0]
    assert item["tag"] == [0.0, 1.0, 2.0]
    assert item["src"] is None and item["tgt"] == [0.0, 2.0]
    assert item["query"] == "When does 1.0s happen again?"


def test_pad_to_square_uses_the_mean_colour(tmp_path, media, tokenizer):
    # A 32 x 64 red image padded to 64 x 64: the top rows become the mean colour, which normalizes to about 0.
    red = (1.0 - CLIP_MEAN[0]) / CLIP_STD[0]
    padded = make_dataset(tmp_path, media, tokenizer, [IMAGE_SAMPLE], image_pad_to_square=True)[0]["image"]
    plain = make_dataset(tmp_path, media, tokenizer, [IMAGE_SAMPLE])[0]["image"]
    assert padded[0, :, 0, 112].abs().max() < 0.02
    assert padded[0, 0, 112, 112].item() == pytest.approx(red, abs=0.02)
    assert plain[0, 0, 0, 112].item() == pytest.approx(red, abs=0.02)


def test_random_crop_transform(tmp_path, media, tokenizer):
    item = make_dataset(tmp_path, media, tokenizer, [VIDEO_SAMPLE], vision_processor="clip_random_224")[0]
    assert item["image"].shape == (3, 3, 224, 224)


def test_filters_and_summary(tmp_path, media, tokenizer, caplog):
    long_answer = dict(TEXT_SAMPLE, source="long", conversations=[human("q"), gpt("one two three four five six")])
    long_video = dict(VIDEO_SAMPLE, video="long.mp4", duration=6.0, source="long_video")
    samples = [VIDEO_SAMPLE, long_video, IMAGE_SAMPLE, TEXT_SAMPLE, long_answer]
    assert len(make_dataset(tmp_path, media, tokenizer, samples)) == 5
    with caplog.at_level(logging.INFO, logger="etchat.data.dataset"):
        dataset = make_dataset(tmp_path, media, tokenizer, samples, max_num_words=5, max_video_len=5)
    assert [s.get("source") for s in dataset.samples] == ["charades", "coco", "sharegpt"]
    assert "5 -> 3" in caplog.text and "charades" in caplog.text and "tvg" in caplog.text

    # min_num_words counts the words of the first answer: "Hi there." has 2, "It is red." 3.
    dataset = make_dataset(tmp_path, media, tokenizer, samples, min_num_words=3, min_video_len=4)
    assert [s.get("source") for s in dataset.samples] == ["long_video", "coco", "long"]

    # Only samples whose task is listed; a sample without a task field has none.
    dataset = make_dataset(tmp_path, media, tokenizer, samples, tasks=["tvg", "dvc"])
    assert [s.get("source") for s in dataset.samples] == ["charades", "long_video"]


def test_inconsistent_samples_are_errors_naming_them_under_strict(tmp_path, media, tokenizer):
    bad_match = dict(VIDEO_SAMPLE, tgt=[0.0])
    with pytest.raises(ValueError, match=r"sample 1 .*anno\.json has 3 <vid> tokens but len\(src\) \+ len\(tgt\) = 2"):
        make_dataset(tmp_path, media, tokenizer, [IMAGE_SAMPLE, bad_match], strict=True)
    two_placeholders = dict(IMAGE_SAMPLE, conversations=[human("<image> <image>"), gpt("a")])
    with pytest.raises(ValueError, match=r"sample 0 \(id img-1\).*2 <image> placeholders"):
        make_dataset(tmp_path, media, tokenizer, [two_placeholders, TEXT_SAMPLE], strict=True)
    in_answer = dict(IMAGE_SAMPLE, conversations=[human("q"), gpt("<image> a")])
    with pytest.raises(ValueError, match=r"sample 1 \(id img-1\).*message 1 is an assistant turn"):
        make_dataset(tmp_path, media, tokenizer, [TEXT_SAMPLE, in_answer], strict=True)
    later = dict(IMAGE_SAMPLE, conversations=[human("q"), gpt("a"), human("<image>\nq2"), gpt("b")])
    assert len(make_dataset(tmp_path, media, tokenizer, [later], strict=True)) == 1
    with pytest.raises(ValueError, match=r"sample 0 \(id img-1\).*message 2 .*gather_conv_query"):
        make_dataset(tmp_path, media, tokenizer, [later, TEXT_SAMPLE], gather_conv_query=True, strict=True)


def test_unusable_samples_are_skipped_with_a_count_and_the_first_reasons(tmp_path, media, tokenizer, caplog):
    bad_match = dict(VIDEO_SAMPLE, tgt=[0.0], source="bad_match")
    missing_video = dict(VIDEO_SAMPLE, video="gone.mp4", source="missing")
    not_an_object = ["a list, not a sample"]
    wrong_roles = {"source": "wrong_roles", "conversations": [gpt("a"), human("q")]}
    samples = [VIDEO_SAMPLE, bad_match, IMAGE_SAMPLE, missing_video, not_an_object, wrong_roles, TEXT_SAMPLE]
    with caplog.at_level(logging.WARNING, logger="etchat.data.sample_checks"):
        dataset = make_dataset(tmp_path, media, tokenizer, samples)
    assert [s.get("source") for s in dataset.samples] == ["charades", "coco", "sharegpt"]
    (warning,) = [r.getMessage() for r in caplog.records if r.name == "etchat.data.sample_checks"]
    assert warning.startswith("4 of 7 training samples cannot be used (")
    assert "1 <vid> counts that disagree" in warning and "1 missing videos or images" in warning
    assert "2 malformed samples" in warning
    # The first three reasons, in file order, each naming its sample.
    assert "sample 1 (id -) of" in warning and "has 3 <vid> tokens" in warning
    assert "sample 3 (id -)" in warning and "gone.mp4" in warning and "sample 4 (id -)" in warning
    assert "sample 5" not in warning
    # A video that the filters drop anyway is not a problem.
    dataset = make_dataset(tmp_path, media, tokenizer, [missing_video, TEXT_SAMPLE], max_video_len=2, strict=True)
    assert len(dataset) == 1


def test_timestamps_as_text_keep_src_and_tgt_as_metadata(tmp_path, media, tokenizer):
    as_text = dict(
        VIDEO_SAMPLE,
        conversations=[human("<image>\nWhen does 1.0s happen again?"), gpt("From 0.0s to 2.0s.")],
    )
    dataset = make_dataset(tmp_path, media, tokenizer, [as_text, IMAGE_SAMPLE], use_time_tag=True, strict=True)
    item = dataset[0]
    assert item["src"] is None and item["tgt"] is None
    assert dataset.samples[0]["src"] == [1.0] and dataset.samples[0]["tgt"] == [0.0, 2.0]
    assert trained_text(item, tokenizer).startswith("From 0.0s to 2.0s.")
    assert item["query"] == "When does 1.0s happen again?"
    # In a file of <vid> samples, a sample with times but without tokens has lost them.
    with pytest.raises(ValueError, match=r"sample 1 .*has 0 <vid> tokens but len\(src\) \+ len\(tgt\) = 3"):
        make_dataset(tmp_path, media, tokenizer, [VIDEO_SAMPLE, as_text], strict=True)


def test_broken_sample_is_retried_with_a_warning(tmp_path, media, tokenizer, caplog):
    broken = dict(VIDEO_SAMPLE, video="broken.mp4", source="broken")
    dataset = make_dataset(tmp_path, media, tokenizer, [broken, TEXT_SAMPLE, IMAGE_SAMPLE])
    random.seed(0)
    with caplog.at_level(logging.WARNING, logger="etchat.data.dataset"):
        item = dataset[0]
    assert item["modality"] in ("text", "image")
    assert "broken.mp4" in caplog.text and "sample 0" in caplog.text


def test_too_short_video_is_retried(tmp_path, media, tokenizer, caplog):
    no_duration = {k: v for k, v in VIDEO_SAMPLE.items() if k != "duration"}  # not filtered at start
    dataset = make_dataset(tmp_path, media, tokenizer, [no_duration, TEXT_SAMPLE], min_video_len=5)
    random.seed(0)
    with caplog.at_level(logging.WARNING, logger="etchat.data.dataset"):
        assert dataset[0]["modality"] == "text"
    assert "short.mp4" in caplog.text and "too short" in caplog.text


def test_always_failing_dataset_raises_after_max_retries(tmp_path, media, tokenizer, caplog):
    broken = dict(VIDEO_SAMPLE, video="broken.mp4")
    missing = dict(IMAGE_SAMPLE, image="missing.png")
    dataset = make_dataset(tmp_path, media, tokenizer, [broken, missing], max_retries=3)
    with caplog.at_level(logging.WARNING, logger="etchat.data.dataset"):
        with pytest.raises(RuntimeError, match="max_retries=3"):
            dataset[0]
    warnings = [r for r in caplog.records if r.name == "etchat.data.dataset" and r.levelno == logging.WARNING]
    assert len(warnings) == 4  # first try + 3 retries


def test_data_arguments_parse_from_the_command_line():
    (args,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(
        ["--annotation_path", "a.json", "b.json", "--fps", "2", "--max_video_len", "350", "--use_time_tag", "True"]
    )
    assert args.annotation_path == ["a.json", "b.json"]
    assert args.gather_conv_query is False
    (gathered,) = HfArgumentParser(DataArguments).parse_args_into_dataclasses(["--gather_conv_query", "True"])
    assert gathered.gather_conv_query is True
    assert args.fps == 2.0 and args.max_video_len == 350 and args.use_time_tag is True
    assert args.max_retries == 10 and args.vision_processor == "clip_center_224" and args.model_max_length == 2048


# ---- collator -------------------------------------------------------------------------------------------------


def fake_sample(input_ids, labels=None, image=None, src=None, tgt=None, query="q"):
    input_ids = torch.tensor(input_ids)
    labels = input_ids.clone() if labels is None else torch.tensor(labels)
    return dict(input_ids=input_ids, labels=labels, image=image, src=src, tgt=tgt, tag=None, query=query)


def test_collator_pads_and_adds_dummy_images(tokenizer):
    frames = torch.randn(2, 3, 224, 224)
    samples = [fake_sample([1, VIDEO_TOKEN_INDEX, 5, 6, 7], image=frames), fake_sample([1, 8, 9], query="t")]
    batch = DataCollator(tokenizer, model_max_length=2048)(samples)
    pad = tokenizer.pad_token_id
    assert batch["input_ids"].tolist() == [[1, VIDEO_TOKEN_INDEX, 5, 6, 7], [1, 8, 9, pad, pad]]
    assert batch["labels"][1].tolist() == [1, 8, 9, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]
    assert batch["images"][0] is frames
    assert batch["images"][1].shape == (1, 3, 224, 224) and not batch["images"][1].any()
    assert batch["has_placeholder"].tolist() == [True, False]
    assert batch["queries"] == ["q", "t"]
    assert batch["src"] == [None, None] and batch["tags"] == [None, None]


def test_collator_pads_with_eos_without_pad_token():
    tok = build_tiny_tokenizer()
    tok.pad_token = None
    batch = DataCollator(tok)([fake_sample([1, 2, 3]), fake_sample([1])])
    assert batch["input_ids"][1].tolist() == [1, tok.eos_token_id, tok.eos_token_id]


def test_collator_truncation_keeps_match_times_consistent(tokenizer, caplog):
    vid = tokenizer.convert_tokens_to_ids("<vid>")
    frames = torch.zeros(3, 3, 224, 224)
    ids = [1, VIDEO_TOKEN_INDEX, 5, vid, 6, vid, 7, vid, 8]  # one src <vid>, then two tgt <vid>

    def collate(max_len):
        return DataCollator(tokenizer, max_len)([fake_sample(ids, image=frames, src=[1.0], tgt=[2.0, 3.0])])

    assert collate(9)["tgt"] == [[2.0, 3.0]]
    with caplog.at_level(logging.WARNING, logger="etchat.data.collator"):
        batch = collate(6)
    assert "truncated" in caplog.text
    assert batch["input_ids"].shape == (1, 6) and batch["src"] == [[1.0]] and batch["tgt"] == [[2.0]]
    batch = collate(4)
    assert batch["src"] == [[1.0]] and batch["tgt"] == [[]]
    batch = collate(1)  # the placeholder itself is cut: the sample is handled like a text-only one
    assert batch["has_placeholder"].tolist() == [False] and batch["images"][0].shape == (1, 3, 224, 224)
    assert batch["src"] == [None] and batch["tgt"] == [None]


def test_collator_truncation_keeps_queries_consistent(tokenizer):
    frames = torch.zeros(2, 3, 224, 224)
    ids = [1, VIDEO_TOKEN_INDEX, 5, 6, VIDEO_TOKEN_INDEX, 7, 8, VIDEO_TOKEN_INDEX, 9]  # placeholders at 1, 4, 7
    queries = ["first", "second", "third"]

    def collate(max_len):
        return DataCollator(tokenizer, max_len)([fake_sample(ids, image=frames, query=queries)])

    assert collate(9)["queries"] == [queries]
    assert collate(7)["queries"] == [["first", "second"]]
    batch = collate(4)  # one placeholder left: a single query, as for a single-turn sample
    assert batch["queries"] == ["first"] and batch["has_placeholder"].tolist() == [True]
    assert batch["images"][0] is frames
    batch = collate(1)  # all cut: a text-only sample
    assert batch["queries"] == [""] and batch["has_placeholder"].tolist() == [False]
    assert batch["images"][0].shape == (1, 3, 224, 224)
    assert queries == ["first", "second", "third"]  # the sample itself is left as it was


def test_collator_rejects_query_placeholder_mismatch(tokenizer):
    frames = torch.zeros(2, 3, 224, 224)
    ids = [1, VIDEO_TOKEN_INDEX, 5, VIDEO_TOKEN_INDEX, 6]
    collator = DataCollator(tokenizer)
    with pytest.raises(ValueError, match=r"batch sample 1 has 2 <image> placeholders but 3 queries"):
        collator([fake_sample([1, 2]), fake_sample(ids, image=frames, query=["a", "b", "c"])])
    with pytest.raises(ValueError, match=r"batch sample 0 has 2 <image> placeholders but 1 queries"):
        collator([fake_sample(ids, image=frames, query="a")])


def test_collator_warns_about_truncation_once(tokenizer, caplog):
    collator = DataCollator(tokenizer, model_max_length=2)
    with caplog.at_level(logging.WARNING, logger="etchat.data.collator"):
        collator([fake_sample([1, 2, 3])])
        collator([fake_sample([1, 2, 3, 4])])
    assert len(caplog.records) == 1


def test_collator_on_dataset_samples(tmp_path, media, tokenizer):
    dataset = make_dataset(tmp_path, media, tokenizer, [VIDEO_SAMPLE, TEXT_SAMPLE])
    batch = DataCollator(tokenizer, 2048)([dataset[0], dataset[1]])
    assert batch["input_ids"].shape[1] == max(dataset[0]["length"], dataset[1]["length"])
    assert [img.shape[0] for img in batch["images"]] == [3, 1]
    assert batch["src"] == [[1.0], None] and batch["tgt"] == [[0.0, 2.0], None]


@pytest.fixture(scope="module")
def tiny_model(tiny_base):
    """A tiny E.T. Chat (matching heads, bi-attention) built from the tiny base weights, with `<vid>` added."""
    fields = ("pretrain_vision_tower", "pretrain_qformer", "vision_config", "qformer_config", "num_query_tokens")
    model, tok = load_etchat(
        tiny_base["model_name_or_path"],
        language_model="phi3",
        use_matching=True,
        bi_attention=True,
        new_modules=("qformer_proj", "qformer_q_proj", "qformer_k_proj", "qformer_v_proj", "frm_head", "vid_head"),
        **{k: tiny_base[k] for k in fields},
    )
    add_match_token(model, tok)
    return model.eval(), tok


def test_tiny_model_forward_on_a_multi_turn_video_batch(tmp_path, media, tiny_model):
    model, tok = tiny_model
    dataset = make_dataset(tmp_path, media, tok, [MULTI_TURN_SAMPLE, TEXT_SAMPLE])
    batch = DataCollator(tok, 2048)([dataset[0], dataset[1]])
    assert batch["queries"] == [MULTI_TURN_QUESTIONS, ""]
    video = batch["images"][0]
    num_turns, num_frames = len(MULTI_TURN_QUESTIONS), video.size(0)
    assert num_frames == 3  # short.mp4: 3 s at 1 fps

    with torch.no_grad():
        frame_tokens = model.encode_videos(batch["images"], batch["queries"], batch["tags"])
        vid_times = [list(s or []) + list(t or []) for s, t in zip(batch["src"], batch["tgt"])]
        inputs = model.assemble_inputs(
            batch["input_ids"], batch["attention_mask"], batch["labels"], frame_tokens, vid_times
        )
        alone = [model.encode_videos([video], [question])[0] for question in MULTI_TURN_QUESTIONS]

    # N placeholders of T frames each in the multi-turn sample; none in the text-only one.
    spans = inputs.frame_spans[0]
    assert [end - start for start, end in spans] == [num_frames] * num_turns
    assert int((inputs.block_ids[0] >= 0).sum()) == num_turns * num_frames
    assert inputs.frame_spans[1] == [] and not (inputs.block_ids[1] >= 0).any()
    # Placeholder k holds the frames compressed with turn k's question, and the two questions give different tokens.
    for (start, end), expected in zip(spans, alone):
        torch.testing.assert_close(inputs.inputs_embeds[0, start:end], expected)
    assert not torch.allclose(alone[0], alone[1])
    # Frames add no trained positions: the same labels are trained before and after the frames go in.
    trained = inputs.labels[0][inputs.labels[0] != IGNORE_INDEX]
    assert trained.tolist() == [t for t in batch["labels"][0].tolist() if t != IGNORE_INDEX]

    with torch.no_grad():
        out = model(**{k: v for k, v in batch.items() if k not in ("has_placeholder", "sample_names")})
    assert torch.isfinite(out.loss) and torch.isfinite(out.match_loss)


# ---- sampler --------------------------------------------------------------------------------------------------


def test_split_balanced_by_hand():
    # Longest first: 10 -> chunk 0, 8 -> chunk 1, 3 -> chunk 1 (8 < 10, now full), 1 -> chunk 0.
    assert split_balanced([0, 1, 2, 3], [10, 8, 3, 1], 2) == [[0, 3], [1, 2]]
    assert split_balanced([0, 1, 2], [3, 2, 1], 2) == [[0, 2], [1]]  # uneven: strided


def make_groups(seed=0):
    rng = random.Random(seed)
    modalities = ["video"] * 21 + ["image"] * 18 + ["text"] * 9
    rng.shuffle(modalities)
    lengths = [rng.randint(1, 500) for _ in modalities]
    return lengths, modalities


@pytest.mark.parametrize("batch_size,world_size,accumulation", [(2, 1, 1), (2, 2, 1), (1, 4, 2), (3, 2, 1)])
def test_sampler_megabatches_have_one_modality(batch_size, world_size, accumulation):
    lengths, modalities = make_groups()
    sampler = ModalityGroupedSampler(lengths, modalities, batch_size, world_size, accumulation, seed=1)
    indices = list(sampler)
    megabatch = batch_size * world_size * accumulation
    assert len(indices) == len(sampler) == len(set(indices))
    for start in range(0, len(indices), megabatch):
        assert len({modalities[i] for i in indices[start : start + megabatch]}) == 1
    for modality in ("video", "image", "text"):
        count = sum(modalities[i] == modality for i in indices)
        assert count == modalities.count(modality) // megabatch * megabatch


def test_sampler_is_deterministic_per_seed_and_epoch():
    lengths, modalities = make_groups()
    first = list(ModalityGroupedSampler(lengths, modalities, 2, 2, seed=3))
    assert first == list(ModalityGroupedSampler(lengths, modalities, 2, 2, seed=3))
    assert first != list(ModalityGroupedSampler(lengths, modalities, 2, 2, seed=4))
    sampler = ModalityGroupedSampler(lengths, modalities, 2, 2, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) != first


def test_sampler_balances_lengths_across_ranks():
    lengths, modalities = make_groups(1)
    batch_size, world_size = 2, 4
    step = batch_size * world_size
    indices = list(ModalityGroupedSampler(lengths, modalities, batch_size, world_size, seed=0))
    for start in range(0, len(indices), step):
        ranks = [indices[start + r * batch_size : start + (r + 1) * batch_size] for r in range(world_size)]
        # Greedy dealing gives the world_size longest samples of a step to different ranks.
        longest = sorted(indices[start : start + step], key=lambda i: lengths[i], reverse=True)[:world_size]
        assert sorted(r for r, batch in enumerate(ranks) for i in batch if i in longest) == list(range(world_size))


def test_sharded_steps_never_mix_modalities():
    # Accelerate gives rank r the batches r, r + world_size, ...: every optimizer step must be single-modality.
    lengths, modalities = make_groups(2)
    batch_size, world_size, accumulation = 2, 2, 2
    indices = list(ModalityGroupedSampler(lengths, modalities, batch_size, world_size, accumulation, seed=0))
    batches = [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    per_rank = [batches[r::world_size] for r in range(world_size)]
    num_steps = len(per_rank[0]) // accumulation
    for step in range(num_steps):
        step_samples = [
            i for rank in per_rank for batch in rank[step * accumulation : (step + 1) * accumulation] for i in batch
        ]
        assert len({modalities[i] for i in step_samples}) == 1


def test_sampler_errors():
    with pytest.raises(ValueError, match="No modality has a full megabatch"):
        ModalityGroupedSampler([1, 2, 3], ["text", "image", "video"], batch_size=2)
    with pytest.raises(ValueError, match="3 lengths but 2 modalities"):
        modality_grouped_indices([1, 2, 3], ["text", "image"], 1)


def test_data_loader_end_to_end(tmp_path, media, tokenizer):
    # A sample repeated whole would be skipped (docs/design.md §15): the second image sample is another one.
    samples = [VIDEO_SAMPLE, IMAGE_SAMPLE, TEXT_SAMPLE, TEXT_SAMPLE, VIDEO_SAMPLE, {**IMAGE_SAMPLE, "id": "img-2"}]
    dataset = make_dataset(tmp_path, media, tokenizer, samples)
    sampler = ModalityGroupedSampler(dataset.lengths, dataset.modalities, batch_size=2, seed=0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, collate_fn=DataCollator(tokenizer))
    batches = list(loader)
    assert len(batches) == 3
    frame_counts = sorted(tuple(img.shape[0] for img in batch["images"]) for batch in batches)
    assert frame_counts == [(1, 1), (1, 1), (3, 3)]  # text (dummy) + image pairs, and the video pair
    placeholders = sorted(batch["has_placeholder"].tolist() for batch in batches)
    assert placeholders == [[False, False], [True, True], [True, True]]
