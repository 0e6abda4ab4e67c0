"""The lmms-eval bridge (etchat.eval.lmms): the tasks score answers as the project's scorers do, E.T. Chat under
lmms-eval answers as the project's inference does, and ``python -m lmms_eval --model etchat`` equals
``scripts/inference.sh`` + ``compute_metrics.py``."""

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lmms_eval.api.model import lmms
from lmms_eval.evaluator import simple_evaluate
from lmms_eval.tasks import TaskManager

from etchat.eval import runner
from etchat.eval.charades import infer as charades_infer
from etchat.eval.charades.metrics import grounding_scores
from etchat.eval.etbench import infer as etbench_infer
from etchat.eval.etbench.compute_metrics import evaluate
from etchat.eval.etbench.predictions import group_samples, sample_key
from etchat.eval.etbench.report import summarize, task_score
from etchat.eval.etbench.tasks import CATEGORIES, TASKS, tasks_of
from etchat.eval.lmms import TASKS_DIR, manifest
from etchat.eval.lmms import tasks as lmms_tasks
from etchat.eval.qvhighlights import infer as qvh_infer
from etchat.model.generation import MatchedAnswer
from tests.etbench_fixture import good_answer, text_question, write_etbench
from tests.video_utils import write_test_video

ROOT = Path(__file__).resolve().parents[1]
NO_JAVA_GROUPS = ("etbench_referring", "etbench_grounding", "etbench_complex")
GROUP_OF = {"Referring": "referring", "Grounding": "grounding", "Captioning": "captioning", "Complex": "complex"}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_etbench(tmp_path_factory.mktemp("lmms_bench"))


@pytest.fixture(scope="module")
def task_manager():
    return TaskManager(include_path=str(TASKS_DIR), include_defaults=False)


@pytest.fixture
def bench_env(bench, monkeypatch, tmp_path):
    annotations, videos, _ = bench
    monkeypatch.setenv("ETBENCH_ANNO_PATH", str(annotations))
    monkeypatch.setenv("ETBENCH_VIDEO_PATH", str(videos))
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    return bench


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory):
    """A folder to put on PYTHONPATH so that the ``lmms_eval.models`` entry point of setup.py is installed: the
    package's own metadata when it is installed from this tree, else a dist-info declaring the same entry point (a
    shared environment installed from another checkout)."""
    declared = "etchat = etchat.eval.lmms:manifest"
    assert declared in (ROOT / "setup.py").read_text()
    folder = tmp_path_factory.mktemp("plugin")
    installed = {ep.value for ep in importlib.metadata.entry_points(group="lmms_eval.models") if ep.name == "etchat"}
    if "etchat.eval.lmms:manifest" not in installed:
        info = folder / "etchat_lmms_entry_point-0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: etchat-lmms-entry-point\nVersion: 0\n")
        (info / "entry_points.txt").write_text(f"[lmms_eval.models]\n{declared}\n")
    return folder


class ScriptedModel(lmms):
    """An lmms-eval model that answers each document from a table (key -> answer) and keeps the questions."""

    is_simple = True

    def __init__(self, answers: dict[str, str]):
        super().__init__()
        self.answers, self.questions = answers, {}

    def generate_until(self, requests):
        out = []
        for request in requests:
            context, _, _, doc_id, task, split = request.args
            key = self.task_dict[task][split][doc_id]["key"]
            self.questions[key] = context
            out.append(self.answers[key])
        return out

    def loglikelihood(self, requests):
        raise NotImplementedError

    def generate_until_multi_round(self, requests):
        raise NotImplementedError


def run_lmms(model, tasks, task_manager, **kwargs):
    return simple_evaluate(model=model, tasks=list(tasks), task_manager=task_manager, bootstrap_iters=0, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# The task configs
# --------------------------------------------------------------------------------------------------------------------


def test_the_task_configs_name_every_task_with_its_scorers_metrics(task_manager):
    expected_tasks = {f"{prefix}_{task}" for prefix in ("etbench", "etbench_subset") for task in TASKS}
    expected_tasks |= {"charades_sta", "qvhighlights", "youcook2_dvc", "activitynet_dvc"}
    assert set(task_manager.all_subtasks) == expected_tasks
    groups = {"etbench", "etbench_subset"} | {
        f"{p}_{g}" for p in ("etbench", "etbench_subset") for g in GROUP_OF.values()
    }
    assert set(task_manager.all_groups) == groups
    descriptors = json.loads((TASKS_DIR / "_tasks.json").read_text())
    assert set(descriptors) == expected_tasks
    for name in expected_tasks:
        config = json.loads(json.dumps(task_manager._get_config(name), default=str))
        (row,) = descriptors[name]
        assert [m["metric"] for m in config["metric_list"]] == list(
            lmms_tasks.metric_names(row["benchmark"], row["task"] or None)
        )
        assert config["dataset_kwargs"]["field"] == name
    # The category groups are the Merged row: their members and the metrics they average.
    for category, short in GROUP_OF.items():
        config = task_manager._get_config(f"etbench_{short}")
        assert config["task"] == [f"etbench_{task}" for task in tasks_of(category)]
        assert [m["metric"] for m in config["aggregate_metric_list"]] == [m for _, m in CATEGORIES[category].merged]


def test_each_model_gets_its_question_form(bench_env, monkeypatch):
    annotations, _, samples = bench_env
    docs = lmms_tasks.etbench_documents("rar", subset=False)
    (sample,) = [s for s in samples if s["task"] == "rar"]
    assert lmms_tasks.doc_to_text(docs[0], {"times": "vid"}) == sample["q"]  # E.T. Chat: <vid> tokens
    assert lmms_tasks.doc_to_text(docs[0], {"times": "text"}) == text_question(sample)  # others: times as text
    monkeypatch.setenv("ETBENCH_ANNO_PATH", str(annotations / "vid"))  # only the <vid> form: a text model is refused
    (doc,) = lmms_tasks.etbench_documents("rar", subset=False)
    with pytest.raises(ValueError, match="ETBENCH_ANNO_PATH"):
        lmms_tasks.doc_to_text(doc, {"times": "text"})
    monkeypatch.setenv(
        "ETBENCH_ANNO_PATH", str(annotations / "txt")
    )  # only the text form: E.T. Chat reads it as text too
    (doc,) = lmms_tasks.etbench_documents("rar", subset=False)
    assert lmms_tasks.doc_to_text(doc, {"times": "vid"}) == text_question(sample)


def test_answers_attach_and_detach_the_matched_fields():
    text = lmms_tasks.attach_record("The event happens in 3 - 5.", {"pred": [3.0, 5.1]})
    assert lmms_tasks.split_record(text.strip()) == ("The event happens in 3 - 5.", {"pred": [3.0, 5.1]})
    assert lmms_tasks.split_record("plain <etchat_record> text") == ("plain <etchat_record> text", {})
    assert lmms_tasks.attach_record("x", {}) == "x"


# --------------------------------------------------------------------------------------------------------------------
# Scores: the project's scorers on all the records of a task
# --------------------------------------------------------------------------------------------------------------------


def scripted_answers(samples):
    """Right answers for every other sample, free text for the others."""
    return {sample_key(s): good_answer(s) if i % 2 == 0 else "I cannot tell." for i, s in enumerate(samples)}


def test_etbench_task_scores_are_compute_metrics_scores_of_the_same_answers(bench_env, task_manager):
    _, _, samples = bench_env
    answers = scripted_answers(samples)
    model = ScriptedModel(answers)
    results = run_lmms(model, NO_JAVA_GROUPS, task_manager)["results"]
    records = [{**s, "a": answers[sample_key(s)]} for s in samples if TASKS[s["task"]].category != "Captioning"]
    collected = evaluate(group_samples(records))
    for task in collected:
        for metric in TASKS[task].metrics:
            assert results[f"etbench_{task}"][f"{metric},none"] == task_score(collected, task, metric), (task, metric)
    assert any(0 < task_score(collected, task, "F1") < 1 for task in ("tvg", "tal"))  # not all-or-nothing
    # The category groups give the Merged row.
    _, merged = summarize(collected)
    assert round(results["etbench_grounding"]["F1,none"] * 100, 1) == float(merged["F1 (gnd)"])
    assert round(results["etbench_referring"]["Acc,none"] * 100, 1) == float(merged["Acc (ref)"])
    assert round(results["etbench_complex"]["mRec,none"] * 100, 1) == float(merged["Rec (com)"])
    # A model that reads text was asked the text form of each question.
    assert {key: model.questions[key] for key in model.questions} == {
        sample_key(s): text_question(s) for s in samples if sample_key(s) in model.questions
    }


def test_the_subset_group_runs_the_subset_only(bench_env, task_manager, monkeypatch):
    _, _, samples = bench_env
    tvg = [s for s in samples if s["task"] == "tvg"]
    monkeypatch.setattr(lmms_tasks, "load_subset", lambda: {"tvg": {tvg[0]["source"]: [tvg[0]["idx"]]}})
    model = ScriptedModel({sample_key(s): good_answer(s) for s in samples})
    results = run_lmms(model, ["etbench_subset_tvg"], task_manager)["results"]
    assert list(model.questions) == [sample_key(tvg[0])]
    assert results["etbench_subset_tvg"]["F1,none"] == 1.0


# --------------------------------------------------------------------------------------------------------------------
# E.T. Chat under lmms-eval
# --------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def etchat_lmms(tiny_checkpoint):
    """E.T. Chat as lmms-eval builds it (a new one per evaluation: lmms-eval frees the model's weights at its end)."""
    from lmms_eval.models import MODEL_REGISTRY_V2, get_model

    if "etchat" not in MODEL_REGISTRY_V2.list_model_names():  # an environment installed from another checkout
        MODEL_REGISTRY_V2.register_manifest(manifest())
    return get_model("etchat").create_from_arg_string(
        f"pretrained={tiny_checkpoint},device=cpu", {"batch_size": 2, "max_batch_size": None, "device": None}
    )


def runner_records(benchmark, model, tokenizer, anno, videos, pred):
    argv = ["--anno_path", str(anno), "--data_path", str(videos), "--pred_path", str(pred), "--model_path", "-",
            "--num_workers", "0", "--greedy", "--max_new_tokens", "8", "--batch_size", "2"]  # fmt: skip
    return runner.run(benchmark, runner.build_parser(benchmark, None).parse_args(argv), model, tokenizer).records


def logged_records(results, task):
    return [next(iter(v for k, v in sample.items() if isinstance(v, dict) and "record" in v))["record"]
            for sample in results["samples"][task]]  # fmt: skip


def test_etchat_under_lmms_eval_answers_and_scores_as_the_projects_inference(etchat_lmms, bench_env, task_manager,
                                                                             tmp_path):  # fmt: skip
    annotations, videos, samples = bench_env
    referring = [s for s in samples if TASKS[s["task"]].category == "Referring"]
    (tmp_path / "anno.json").write_text(json.dumps(referring))
    records = runner_records(etbench_infer.ETBENCH, etchat_lmms.model, etchat_lmms.tokenizer, tmp_path / "anno.json",
                             videos, tmp_path / "pred")  # fmt: skip
    results = run_lmms(etchat_lmms, ["etbench_referring"], task_manager, gen_kwargs="max_new_tokens=8")
    lmms_answers = {
        sample_key(r): r["a"] for task in ("rar", "eca", "rvq") for r in logged_records(results, f"etbench_{task}")
    }
    assert lmms_answers == {sample_key(r): r["a"] for r in records}
    collected = evaluate(group_samples(records))
    for task in ("rar", "eca", "rvq"):
        assert results["results"][f"etbench_{task}"]["Acc,none"] == task_score(collected, task, "Acc")


def fake_generate(model, tokenizer, requests, settings, generator=None, on_token=None):
    """Stands in for decoding: an answer whose text writes frame indices and whose matches give other times."""
    return [
        MatchedAnswer(
            text="The event happens in 2 - 6.",
            raw_text="The event happens in <vid> - <vid>.",
            token_ids=[],
            frame_indices=[2, 6],
            times=[1.0, 3.0],
            similarities=[torch.linspace(0, 1, r.video.size(0)), torch.linspace(1, 0, r.video.size(0))],
        )
        for r in requests
    ]


def test_etchat_matches_reach_charades_and_qvhighlights_scores(etchat_lmms, task_manager, tmp_path, monkeypatch):
    """Charades-STA and QVHighlights take E.T. Chat's matched times and curves, not the numbers of its text."""
    monkeypatch.setattr(runner, "generate", fake_generate)
    videos = tmp_path / "videos"
    videos.mkdir()
    write_test_video(videos / "vidA.mp4", num_frames=16, fps=2, size=(32, 32))
    (tmp_path / "charades.txt").write_text("vidA 1.0 3.0##a person sits down.\n")
    qvh_line = {"qid": 7, "query": "a dog runs", "vid": "vidA", "duration": 8, "relevant_windows": [[2, 4]],
                "relevant_clip_ids": [1], "saliency_scores": [[4, 4, 4]]}  # fmt: skip
    (tmp_path / "qvh.jsonl").write_text(json.dumps(qvh_line) + "\n")
    for name, anno in (("CHARADES", "charades.txt"), ("QVHIGHLIGHTS", "qvh.jsonl")):
        monkeypatch.setenv(f"{name}_ANNO_PATH", str(tmp_path / anno))
        monkeypatch.setenv(f"{name}_VIDEO_PATH", str(videos))
    monkeypatch.setenv("LMMS_EVAL_DATASETS_CACHE", str(tmp_path / "datasets_cache"))
    model, tokenizer = etchat_lmms.model, etchat_lmms.tokenizer
    charades = runner_records(
        charades_infer.CHARADES_STA, model, tokenizer, tmp_path / "charades.txt", videos, tmp_path / "c"
    )
    qvh = runner_records(qvh_infer.QVHIGHLIGHTS, model, tokenizer, tmp_path / "qvh.jsonl", videos, tmp_path / "q")
    results = run_lmms(etchat_lmms, ["charades_sta", "qvhighlights"], task_manager, gen_kwargs="max_new_tokens=8")
    (lmms_charades,) = logged_records(results, "charades_sta")
    assert charades[0]["pred"] == [1.0, 3.0] and charades[0]["response"] == "The event happens in 2 - 6."
    assert lmms_charades["pred"] == charades[0]["pred"] and lmms_charades["response"] == charades[0]["response"]
    lmms_qvh = {r["task"]: r for r in logged_records(results, "qvhighlights")}
    assert lmms_qvh["hd"]["pred_saliency_scores"] == [r for r in qvh if r["task"] == "hd"][0]["pred_saliency_scores"]
    assert lmms_qvh["mr"]["pred_relevant_windows"] == [r for r in qvh if r["task"] == "mr"][0]["pred_relevant_windows"]
    assert results["results"]["charades_sta"]["mIoU,none"] == grounding_scores(charades)["mIoU"] == 1.0


def test_the_entry_point_registers_etchat_with_lmms_eval(plugin_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_path), os.environ.get("PYTHONPATH", "")])}
    code = "from lmms_eval.models import get_model; print(get_model('etchat').__module__)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "etchat.eval.lmms.model"


@pytest.mark.slow
def test_lmms_eval_command_equals_inference_script_and_compute_metrics(tiny_checkpoint, bench, plugin_path, tmp_path):
    """``python -m lmms_eval --model etchat --tasks etbench`` and ``scripts/inference.sh`` + ``compute_metrics.py``
    on the same tiny checkpoint and samples (greedy): the same answers and the same per-task numbers."""
    annotations, videos, samples = bench
    env = {
        **os.environ,
        "SKIP_SETUP": "1",
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"],
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(plugin_path)]),
        "CUDA_VISIBLE_DEVICES": "",
        "ANNO_PATH": str(annotations / "vid"),
        "VIDEO_PATH": str(videos),
        "PRED_PATH": str(tmp_path / "pred"),
        "ETBENCH_ANNO_PATH": str(annotations),
        "ETBENCH_VIDEO_PATH": str(videos),
        "LMMS_EVAL_DATASETS_CACHE": str(tmp_path / "datasets_cache"),
    }
    options = ["--greedy", "--max_new_tokens", "8", "--batch_size", "2"]
    subprocess.run(["bash", str(ROOT / "scripts" / "inference.sh"), tiny_checkpoint, *options], env=env, check=True,
                   cwd=tmp_path)  # fmt: skip
    lmms_command = [
        sys.executable, "-m", "lmms_eval", "--model", "etchat",
        "--model_args", f"pretrained={tiny_checkpoint},device=cpu", "--tasks", "etbench",
        "--include_path", str(TASKS_DIR), "--gen_kwargs", "max_new_tokens=8",
        "--batch_size", "2", "--output_path", str(tmp_path / "lmms"), "--log_samples",
    ]  # fmt: skip
    subprocess.run(lmms_command, env=env, check=True, cwd=tmp_path)
    metrics = json.loads((tmp_path / "pred" / "metrics.json").read_text())
    (results_file,) = (tmp_path / "lmms").rglob("*_results.json")
    results = json.loads(results_file.read_text())["results"]
    for task, spec in TASKS.items():
        for metric in spec.metrics:
            expected = round(sum(m[metric] for m in metrics[task].values()) / len(metrics[task]), 5)
            assert results[f"etbench_{task}"][f"{metric},none"] == pytest.approx(expected, abs=1e-9), (task, metric)
    lmms_answers = {}
    for path in (tmp_path / "lmms").rglob("*_samples_etbench_*.jsonl"):
        for line in path.read_text().splitlines():
            sample = json.loads(line)
            record = next(v for v in sample.values() if isinstance(v, dict) and "record" in v)["record"]
            lmms_answers[sample_key(record)] = record["a"]
    predictions = json.loads((tmp_path / "pred" / "etbench.json").read_text())
    assert lmms_answers == {sample_key(r): r["a"] for r in predictions} and len(lmms_answers) == len(samples)


def test_the_tasks_folder_command_prints_the_include_path():
    out = subprocess.run(
        [sys.executable, "-m", "etchat.eval.lmms"], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert Path(out.stdout.strip()) == TASKS_DIR and (TASKS_DIR / "etbench.yaml").is_file()


def test_generation_kwargs_decide_etchat_decoding():
    from types import SimpleNamespace

    from etchat.eval.lmms.model import decoding_settings

    model = SimpleNamespace(generation_config=SimpleNamespace(eos_token_id=7), config=SimpleNamespace(conv_type="phi3"))
    greedy = decoding_settings(model, {"do_sample": False, "temperature": 0, "max_new_tokens": 16, "until": "\n\n"})
    assert not greedy.do_sample and greedy.max_new_tokens == 16 and greedy.stop_strings == ("<|end|>", "\n\n")
    assert greedy.eos_token_ids == (7,)
    sampled = decoding_settings(model, {"do_sample": True, "temperature": 0.7, "top_p": 0.9})
    assert sampled.do_sample and (sampled.temperature, sampled.top_p, sampled.top_k) == (0.7, 0.9, 50)
    published = decoding_settings(model, {})  # no request settings: the published sampling
    assert published.do_sample and (published.temperature, published.top_k, published.max_new_tokens) == (0.2, 50, 2048)
