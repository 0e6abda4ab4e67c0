"""Timestamps as text (et_instruct_164k_txt.json, E.T. Bench's txt annotations): a model trained on them without
<vid> matching answers with times in its text, and its E.T. Bench run is scored like any other."""

import json
import os

import pytest
from video_utils import write_test_video

from etchat.eval import runner
from etchat.eval.etbench import compute_metrics
from etchat.eval.etbench import infer as etbench_infer
from etchat.model.loading import load_etchat
from etchat.toy.tiny import training_args
from etchat.train.train import train

QUESTION = "When does the red circle appear?"
ANSWER = "It appears from 2.0 to 5.0 seconds."


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("txt_videos")
    for i in range(3):
        write_test_video(root / f"v{i}.mp4", num_frames=16, fps=2, size=(32, 32))  # 8 s
    return root


def txt_sample(video: str) -> dict:
    """An et_instruct_164k_txt.json-style sample: the times are in the text, src / tgt only describe them."""
    return {
        "video": video,
        "duration": 8.0,
        "task": "tvg",
        "source": "synthetic",
        "src": [1.0],
        "tgt": [2.0, 5.0],
        "conversations": [
            {"from": "human", "value": f"<image>\nAfter 1.0s, {QUESTION.lower()}"},
            {"from": "gpt", "value": ANSWER},
        ],
    }


@pytest.mark.slow
def test_a_text_timestamp_model_trains_answers_in_text_and_is_scored(tiny_base, videos, tmp_path):
    anno = tmp_path / "et_instruct_txt.json"
    anno.write_text(json.dumps([txt_sample(f"v{i}.mp4") for i in range(3)]))
    out = tmp_path / "model"
    train([
        "--model_name_or_path", tiny_base["model_name_or_path"], "--language_model", "phi3", "--conv_type", "phi3",
        "--pretrain_vision_tower", tiny_base["pretrain_vision_tower"],
        "--pretrain_qformer", tiny_base["pretrain_qformer"], *training_args(tiny_base),
        "--anno_path", str(anno), "--video_path", str(videos), "--strict", "True",
        "--tuning_mode", "llm", "--use_matching", "False", "--bi_attention", "True",
        "--output_dir", str(out), "--save_full_model", "True", "--save_strategy", "no",
        "--per_device_train_batch_size", "3", "--max_steps", "40", "--learning_rate", "3e-3",
        "--lr_scheduler_type", "constant", "--logging_steps", "10", "--report_to", "none",
        "--dataloader_num_workers", "0", "--use_cpu", "True", "--seed", "0",
    ])  # fmt: skip
    model, tokenizer = load_etchat(str(out))
    assert model.config.use_matching is False

    # E.T. Bench txt annotations: times written in q, src kept as metadata.
    bench = [
        {"idx": 0, "task": "tvg", "source": "synthetic", "video": "v0.mp4", "duration": 8.0, "tgt": [2.0, 5.0],
         "q": QUESTION},
        {"idx": 1, "task": "tvg", "source": "synthetic", "video": "v1.mp4", "duration": 8.0, "tgt": [2.0, 5.0],
         "src": [1.0], "q": f"After 1.0s, {QUESTION.lower()}"},
    ]  # fmt: skip
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "etbench_txt_tvg.json").write_text(json.dumps(bench))
    pred = tmp_path / "pred"
    argv = ["--anno_path", str(tmp_path / "txt"), "--data_path", str(videos), "--pred_path", str(pred),
            "--model_path", str(out), "--greedy", "--max_new_tokens", "24", "--workers", "0"]  # fmt: skip
    args = runner.build_parser(etbench_infer.ETBENCH, None).parse_args(argv)
    records = runner.run(etbench_infer.ETBENCH, args, model.eval(), tokenizer).records
    # The trained answer (the plain question was not trained, so its answer may repeat a piece of it).
    assert all(r["a"].startswith("It appears from 2.0 to 5.0") for r in records), [r["a"] for r in records]
    assert records[1]["a"] == ANSWER
    assert records[1]["src"] == [1.0] and "error" not in records[1]

    scores = compute_metrics.main([str(pred)])["groups"]["tvg"]["synthetic"]
    assert scores["F1@0.7"] == 1.0 and scores["mIoU"] == pytest.approx(1.0)
    assert os.path.isfile(pred / "metrics.json")
