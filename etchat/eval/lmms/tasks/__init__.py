"""E.T. Bench, Charades-STA, QVHighlights and dense captioning as lmms-eval tasks (docs/design.md §19).

The YAML files of this folder are lmms-eval task configs (``--include_path``, see `etchat.eval.lmms`); the functions
they name are these:

* documents (`process_docs`): lmms-eval loads a task's documents with ``datasets``; ours load a one-line descriptor
  (``_tasks.json``, under the task's name: benchmark, data set, E.T. Bench task, subset) that `process_docs` turns into
  the benchmark's samples, read by the project's own readers from the files the environment names (`DATA_SETS`):
  ``ETBENCH_ANNO_PATH`` / ``ETBENCH_VIDEO_PATH``, ``CHARADES_*``, ``QVHIGHLIGHTS_*``, ``YOUCOOK2_*``,
  ``ACTIVITYNET_*``, by default the project's ``data/`` layout, relative to the working folder. A document carries
  the sample as JSON, the video file and the question;
* the question (`doc_to_text`): the benchmark's own, as E.T. Chat is asked it (E.T. Bench: the annotation's ``q``).
  E.T. Bench questions come in two forms, times as `<vid>` tokens (``annotations/vid``, E.T. Chat's) and times as
  text (``annotations/txt``, every other model's); ``ETBENCH_ANNO_PATH`` may name the folder holding both, and each
  model gets its form (``lmms_eval_specific_kwargs``: ``etchat`` reads `<vid>`, the others text). A `<vid>` question
  for a model that reads text is an error;
* scoring (`process_results`, `aggregate`): an answer becomes the benchmark's record (`etchat.eval.answers`; E.T.
  Chat's matched times and curves ride along, `etchat.eval.lmms.model`), and the aggregation runs the project's
  scorer on all the records of the task at once, so corpus-level scores (CIDEr, SODA_c, mAP) are the official ones.
  Each metric of a task reads the same scores, computed once.

Scales are those of each scorer: E.T. Bench, Charades-STA and dense captioning in 0-1, QVHighlights x100.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import datasets

from etchat.constants import MATCH_TOKEN
from etchat.data.sample_checks import report_problems
from etchat.eval.answers import TEXT_BENCHMARKS
from etchat.eval.etbench.infer import read_annotations
from etchat.eval.etbench.predictions import group_samples, load_subset, sample_key
from etchat.eval.etbench.report import report_lines, task_score
from etchat.eval.etbench.tasks import TASKS

logger = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parent
# What E.T. Chat attaches to an answer text (its matched times, curves, errors); see `etchat.eval.lmms.model`.
RECORD_OPEN, RECORD_CLOSE = "<etchat_record>", "</etchat_record>"
TARGET_FIELDS = ("p", "o", "tgt", "g", "span", "relevant_windows", "saliency_scores", "timestamps", "sentences")

CHARADES_METRICS = ("R1@0.3", "R1@0.5", "R1@0.7", "mIoU")
QVHIGHLIGHTS_METRICS = (
    "MR-full-R1@0.5",
    "MR-full-R1@0.7",
    "MR-full-mAP",
    "MR-full-mAP@0.5",
    "MR-full-mAP@0.75",
    "MR-short-mAP",
    "MR-middle-mAP",
    "MR-long-mAP",
    *(f"HL-min-{level}-{metric}" for level in ("Fair", "Good", "VeryGood") for metric in ("mAP", "Hit1")),
)
DVC_METRICS = ("CIDEr", "METEOR", "Bleu_4", "SODA_c", "Precision", "Recall", "F1")


@dataclass(frozen=True)
class DataSet:
    """Where a data set's annotations and videos are: environment variables and their defaults."""

    anno_env: str
    anno_default: str
    video_env: str
    video_default: str

    def anno_path(self) -> str:
        return os.environ.get(self.anno_env, self.anno_default)

    def video_path(self) -> str:
        """The videos folder; by default its ``_compressed`` copy when that exists, as the launchers read."""
        if self.video_env in os.environ:
            return os.environ[self.video_env]
        compressed = self.video_default.rstrip("/") + "_compressed"
        return compressed if os.path.isdir(compressed) else self.video_default


DATA_SETS = {
    "etbench": DataSet("ETBENCH_ANNO_PATH", "data/etbench/annotations", "ETBENCH_VIDEO_PATH", "data/etbench/videos"),
    "charades": DataSet(
        "CHARADES_ANNO_PATH", "data/charades/charades_sta_test.txt", "CHARADES_VIDEO_PATH", "data/charades/videos"
    ),
    "qvhighlights": DataSet(
        "QVHIGHLIGHTS_ANNO_PATH",
        "data/qvhighlights/highlight_val_release.jsonl",
        "QVHIGHLIGHTS_VIDEO_PATH",
        "data/qvhighlights/videos",
    ),
    "youcook2": DataSet(
        "YOUCOOK2_ANNO_PATH",
        "data/youcook2/youcookii_annotations_trainval.json",
        "YOUCOOK2_VIDEO_PATH",
        "data/youcook2/videos",
    ),
    "activitynet": DataSet(
        "ACTIVITYNET_ANNO_PATH",
        "data/activitynet/captions/val_1.json",
        "ACTIVITYNET_VIDEO_PATH",
        "data/activitynet/videos",
    ),
}


# --------------------------------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------------------------------


def etbench_forms(path: str) -> dict[str, list[dict]]:
    """The E.T. Bench samples of each question form found at ``path``: ``vid`` and / or ``txt`` subfolders of an
    annotations folder, else the file or folder itself (as ``vid`` when some question holds `<vid>`, else ``txt``)."""
    root = Path(path)
    folders = {form: root / form for form in ("vid", "txt") if (root / form).is_dir()}
    if not folders:
        if not root.exists():
            raise FileNotFoundError(f"E.T. Bench annotations not found: {path} (set ETBENCH_ANNO_PATH)")
        samples = _read_etbench(path)
        return {"vid" if any(MATCH_TOKEN in s["q"] for s in samples) else "txt": samples}
    return {form: _read_etbench(str(folder)) for form, folder in folders.items()}


def _read_etbench(path: str) -> list[dict]:
    samples, problems = read_annotations(path)
    report_problems(problems, len(samples) + len(problems), f"E.T. Bench samples of {path}")
    return samples


def etbench_documents(task: str, subset: bool) -> list[dict]:
    data = DATA_SETS["etbench"]
    forms = etbench_forms(data.anno_path())
    main_form = forms.get("vid") or forms["txt"]
    text_questions = {sample_key(s): s["q"] for s in forms.get("txt", [])}
    chosen = load_subset() if subset else None
    documents = []
    for sample in main_form:
        if sample["task"] != task:
            continue
        if chosen is not None and sample["idx"] not in chosen.get(task, {}).get(sample["source"], ()):
            continue
        key = sample_key(sample)
        documents.append(_document("etbench", sample, data.video_path(), text_questions.get(key, sample["q"])))
    return documents


def benchmark_documents(benchmark: str, data_set: str) -> list[dict]:
    data = DATA_SETS[data_set]
    text_benchmark = TEXT_BENCHMARKS[benchmark]
    samples, problems = text_benchmark.benchmark.load_samples(data.anno_path())
    report_problems(problems, len(samples) + len(problems), f"{text_benchmark.benchmark.name} samples")
    return [_document(benchmark, sample, data.video_path()) for sample in samples]


def _document(benchmark: str, sample: dict, data_path: str, text_question: str | None = None) -> dict:
    bench = TEXT_BENCHMARKS[benchmark].benchmark
    job = bench.build_job(sample, data_path, "phi3")
    target = {name: sample[name] for name in TARGET_FIELDS if name in sample}
    return {
        "benchmark": benchmark,
        "key": bench.sample_key(sample),
        "video": job.video_path,
        "data_path": data_path,
        "sample": json.dumps(sample),
        "question": job.query,
        "text_question": text_question if text_question is not None else job.query,
        "target": json.dumps(target),
    }


def process_docs(descriptor: datasets.Dataset) -> datasets.Dataset:
    """The documents of the task that ``descriptor`` (its row of ``_tasks.json``) names."""
    row = descriptor[0]
    if row["benchmark"] == "etbench":
        documents = etbench_documents(row["task"], row["subset"])
    else:
        documents = benchmark_documents(row["benchmark"], row["data_set"])
    if not documents:
        raise ValueError(f"no {row['benchmark']} sample for this task in {DATA_SETS[row['data_set']].anno_path()}")
    return datasets.Dataset.from_list(documents)


def doc_to_visual(doc: dict) -> list[str]:
    return [doc["video"]]


def doc_to_text(doc: dict, lmms_eval_specific_kwargs: dict | None = None) -> str:
    """The question; models that read `<vid>` tokens (``times: vid``) get E.T. Chat's form, the others the text form."""
    kwargs = lmms_eval_specific_kwargs or {}
    if kwargs.get("times") == "vid":
        return doc["question"]
    question = doc["text_question"]
    if MATCH_TOKEN in question:
        raise ValueError(
            f"E.T. Bench question {doc['key']} writes its times as {MATCH_TOKEN} tokens, which only E.T. Chat reads: "
            "point ETBENCH_ANNO_PATH at the annotations folder holding txt/ (or at annotations/txt)"
        )
    return f"{kwargs.get('pre_prompt', '')}{question}{kwargs.get('post_prompt', '')}"


def doc_to_target(doc: dict) -> str:
    return doc["target"]


# --------------------------------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------------------------------


def split_record(text: str) -> tuple[str, dict]:
    """An answer text and the record fields E.T. Chat attached to it (empty for other models)."""
    head, found, tail = text.rpartition(RECORD_OPEN)
    if not found or not tail.endswith(RECORD_CLOSE):
        return text, {}
    return head.rstrip(), json.loads(tail[: -len(RECORD_CLOSE)])


def attach_record(text: str, fields: dict) -> str:
    return f"{text}\n{RECORD_OPEN}{json.dumps(fields)}{RECORD_CLOSE}" if fields else text


def metric_names(benchmark: str, task: str | None = None) -> tuple[str, ...]:
    """The metrics a task of ``benchmark`` reports (its YAML's ``metric_list``)."""
    if benchmark == "etbench":
        return TASKS[task].metrics
    return {"charades": CHARADES_METRICS, "qvhighlights": QVHIGHLIGHTS_METRICS, "dvc": DVC_METRICS}[benchmark]


def process_results(doc: dict, results: list) -> dict:
    """The benchmark record of one answer, under every metric of the task (each aggregation scores them all)."""
    text, attached = split_record(results[0] if results and results[0] is not None else "")
    text_benchmark = TEXT_BENCHMARKS[doc["benchmark"]]
    job = text_benchmark.benchmark.build_job(json.loads(doc["sample"]), doc["data_path"], "phi3")
    record = {**text_benchmark.to_record(job, text, None), **attached}
    task = record.get("task") if doc["benchmark"] == "etbench" else None
    item = {"benchmark": doc["benchmark"], "record": record}
    return {metric: {**item, "metric": metric} for metric in metric_names(doc["benchmark"], task)}


def aggregate(items: list[dict]) -> float:
    """One metric of a task, from the project's scorer run on all of the task's records."""
    records = [item["record"] for item in items]
    scores = _scores(items[0]["benchmark"], json.dumps(records, sort_keys=True))
    value = scores[items[0]["metric"]]
    return math.nan if value is None else value


@functools.lru_cache(maxsize=4)
def _scores(benchmark: str, records_json: str) -> dict:
    records = json.loads(records_json)
    failed = [record for record in records if "error" in record]
    if failed:
        logger.error(
            "%d of %d %s answers failed in generation (first: %s): scored as failed answers",
            len(failed),
            len(records),
            benchmark,
            failed[0]["error"],
        )
    return {"etbench": _etbench_scores, "charades": _charades_scores, "qvhighlights": _qvhighlights_scores}.get(
        benchmark, _dense_captioning_scores
    )(records)


def _etbench_scores(records: list[dict]) -> dict:
    from etchat.eval.etbench.compute_metrics import evaluate

    collected = evaluate(group_samples(records))
    for line in report_lines(collected):
        logger.info(line)
    (task,) = collected
    return {metric: task_score(collected, task, metric) for metric in TASKS[task].metrics}


def _charades_scores(records: list[dict]) -> dict:
    from etchat.eval.charades.metrics import grounding_scores

    return grounding_scores(records)


def _qvhighlights_scores(records: list[dict]) -> dict:
    from etchat.eval.qvhighlights.evaluate import evaluate
    from etchat.eval.qvhighlights.formats import submission_from_records

    submission, truth = submission_from_records(records)
    result, report = evaluate(submission, truth, "lmms-eval answers")
    if report.problems():
        logger.warning("QVHighlights answers: %s", report.problems())
    return result["brief"]


def _dense_captioning_scores(records: list[dict]) -> dict:
    from etchat.eval.dvc.evaluate import evaluate
    from etchat.eval.dvc.formats import check_references, submission_from_records

    submission, references = submission_from_records(records)
    result, report = evaluate(submission, [check_references(references, "lmms-eval documents")], "lmms-eval answers")
    if report.problems():
        logger.warning("dense-captioning answers: %s", report.problems())
    return result
