"""E.T. Bench's per-sample statistics (`etchat.eval.sample_scores`, docs/design.md §18): one stratum per (task, source)
group, each sample clustered by its video; the formulas of the Overall-row columns and the Merged row; the parse
audit per task."""

from __future__ import annotations

from etchat.eval.etbench.parsing import (
    dense_caption_failure,
    highlight_failure,
    option_letter_failure,
    span_failure,
)
from etchat.eval.etbench.predictions import sample_key
from etchat.eval.etbench.report import overall_columns
from etchat.eval.etbench.scorers import IOU_THRESHOLDS
from etchat.eval.etbench.tasks import CATEGORIES, TASKS, tasks_of
from etchat.eval.sample_scores import AuditGroup, Formula, SampleScores, Stratum

BENCHMARK = "etbench"
RULES = (
    "E.T. Bench evaluation/compute_metrics.py as released with the data set (docs/design.md §9): a recognised wrong "
    "option letter falls through to sentence similarity (RAR, ECA, RVQ), GVQ's leading letter is final; random "
    "stand-in captions from a seeded generator, videos in file order"
)


def stratum_name(task: str, source: str) -> str:
    return f"{task}/{source}"


def source_formula(task: str, metric: str, stratum: str) -> Formula:
    """How one (task, source) group's `metric` follows from the columns its scorer writes (`TaskSpec.measure`)."""
    if metric == "Acc":
        return ["unit_mean", stratum, "correct"]
    if metric == "mIoU":
        return ["unit_mean", stratum, "iou"]
    if task in ("tvg", "epm", "tem", "gvq"):  # F1 / mRec: the mean over thresholds of the hit rate
        return ["unit_mean", stratum, "recall"]
    if task == "tal":
        return ["unit_mean", stratum, "f1"]
    if task == "evs":  # failed answers are left out of the mean
        return ["sum_ratio", stratum, "f1", "parsed"]
    if task == "vhd":
        return ["unit_mean", stratum, "hit"]
    if TASKS[task].uses_captions:
        if metric == "F1":  # per threshold F1 of precision and recall (each a mean over all samples), then the mean
            pairs = [[["unit_mean", stratum, f"P@{t}"], ["unit_mean", stratum, f"R@{t}"]] for t in IOU_THRESHOLDS]
            return ["mean", *(["f1", precision, recall] for precision, recall in pairs)]
        return ["sum_ratio", stratum, metric, "parsed"]  # caption metrics: the mean over the parsed videos
    raise ValueError(f"no formula for {task} {metric}")


def metric_formulas(groups: dict[str, dict[str, list]]) -> dict[str, Formula]:
    """The Overall-row columns of the tasks present (the mean over a task's sources) and the Merged row's columns of
    the categories whose tasks are all present."""
    formulas, by_task = {}, {}
    for task, metric, column in overall_columns():
        if task not in groups:
            continue
        parts = [source_formula(task, metric, stratum_name(task, source)) for source in groups[task]]
        formulas[column] = ["mean", *parts]
        by_task[task, metric] = formulas[column]
    for category in CATEGORIES.values():
        for column, metric in category.merged:
            tasks = tasks_of(category.name)
            if all(task in groups for task in tasks):
                formulas[column] = ["mean", *(by_task[task, metric] for task in tasks)]
    return formulas


def answer_failure(task: str, sample: dict, letters: str) -> str | None:
    """Why the answer gives no usable option letter, time or caption (`etchat.eval.etbench.parsing`), or None."""
    answer = sample["a"]
    if task in ("rar", "eca", "rvq"):
        return option_letter_failure(answer, letters)
    if task == "gvq":
        kinds = (option_letter_failure(answer, "abcde"[: len(sample["o"])], bracketed=False), span_failure(answer))
        return " + ".join(kind for kind in dict.fromkeys(kinds) if kind) or None
    if task == "vhd":
        return highlight_failure(answer)
    if TASKS[task].uses_captions:
        return dense_caption_failure(answer)
    return span_failure(answer)


def etbench_sample_scores(groups: dict, per_sample: dict, subset: bool = False, seed: int = 0) -> SampleScores:
    """The per-sample statistics of an E.T. Bench evaluation: ``groups`` as scored (task -> source -> samples) and
    ``per_sample`` the columns `compute_metrics.evaluate_with_samples` returned for them. A sample without a
    ``video`` field is a cluster of its own."""
    strata, audit = {}, {}
    for task, sources in groups.items():
        group_audit = audit.setdefault(task.upper(), AuditGroup())
        for source, samples in sources.items():
            units = [sample_key(sample) for sample in samples]
            clusters = [str(sample.get("video", key)) for sample, key in zip(samples, units)]
            strata[stratum_name(task, source)] = Stratum(units, clusters, per_sample[task][source])
            letters = "abcde"[: len(samples[0]["o"])] if samples and TASKS[task].options else ""
            for sample, key in zip(samples, units):
                group_audit.add(key, answer_failure(task, sample, letters), sample["a"])
    scoring = {"rules": RULES, "subset": subset, "seed": seed}
    return SampleScores(BENCHMARK, strata, metric_formulas(groups), audit, scoring)
