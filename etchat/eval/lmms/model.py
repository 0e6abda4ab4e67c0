"""E.T. Chat as an lmms-eval model: ``python -m lmms_eval --model etchat --model_args pretrained=<checkpoint>``
(docs/design.md §19).

Model arguments: ``pretrained`` (a folder or a Hub repo id, default the published stage-3 model), ``revision``,
``dtype`` (``auto``: float16 on CUDA, else float32), ``num_workers`` (video decoding processes), ``seed`` (sampling);
lmms-eval's ``--batch_size`` and ``--device`` apply.

Requests are answered by the project's inference runner (`etchat.eval.runner.run_jobs`: videos decoded ahead,
batched generation with `<vid>` matching, a failing sample failing alone). A document of this project's tasks
(`etchat.eval.lmms.tasks`) is asked exactly as ``scripts/inference*.sh`` asks it (the benchmark's `build_job`: the
phi3 prompt, E.T. Bench's ``Best Option: (`` and repetition penalty, the `<vid>` times of the question), so greedy
answers equal those of the project's inference; the matched times and curves that the benchmark's record takes from
the matches (Charades-STA, QVHighlights) are attached to the answer text for the task's scoring to read. A document
of any other lmms-eval task is asked its context with the phi3 template, over its video.

Decoding follows each task's ``generation_kwargs``: ``do_sample: false`` (or temperature 0) is greedy, the project's
tasks ask for it; sampling takes the request's temperature, top_p and top_k over the published ones (0.2, 1.0, 50);
``until`` strings also stop an answer. The same sample asked by two tasks (``etbench`` and ``etbench_subset``) is
answered once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

from accelerate import Accelerator
from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms

from etchat.cli import resolve_device_dtype
from etchat.data.conversation import chat_prompt
from etchat.eval.answers import TEXT_BENCHMARKS
from etchat.eval.lmms.tasks import attach_record
from etchat.eval.runner import Job, run_jobs
from etchat.model.generation import GenerationSettings, model_conv_type, published_settings
from etchat.model.loading import load_etchat

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "PolyU-ChenLab/ETChat-Phi3-Mini-Stage-3"
OTHER = "other"  # documents of tasks that are not this project's


class Answers:
    """Where `run_jobs` puts its records (it journals into a `ResultStore`; here they are only kept)."""

    def __init__(self):
        self.records: dict[str, dict] = {}

    @staticmethod
    def key_fn(record: dict) -> str:
        return record["key"]

    def append(self, record: dict) -> None:
        self.records[record["key"]] = record


def decoding_settings(model, gen_kwargs: dict | None) -> GenerationSettings:
    """The published decoding, changed as a request's generation kwargs ask."""
    kwargs = dict(gen_kwargs or {})
    if "do_sample" in kwargs:
        greedy = not kwargs["do_sample"] or kwargs.get("temperature") == 0
    else:
        greedy = kwargs.get("temperature") == 0
    settings = published_settings(model, kwargs.get("max_new_tokens"), greedy=greedy)
    if not greedy:
        changes = {name: kwargs[name] for name in ("temperature", "top_p", "top_k") if kwargs.get(name) is not None}
        settings = replace(settings, **changes)
    until = kwargs.get("until") or ()
    until = (until,) if isinstance(until, str) else tuple(until)
    if until:
        settings = replace(settings, stop_strings=(*settings.stop_strings, *until))
    if (kwargs.get("num_beams") or 1) > 1:
        logger.warning("E.T. Chat decodes without beam search: num_beams=%s is ignored", kwargs["num_beams"])
    return settings


class ETChat(lmms):
    is_simple = True

    def __init__(
        self,
        pretrained: str = DEFAULT_MODEL,
        revision: str | None = None,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        max_batch_size: int | None = None,
        num_workers: int | str = 0,
        seed: int | str = 0,
    ):
        super().__init__()
        accelerator = Accelerator()
        if accelerator.num_processes > 1:
            device = f"cuda:{accelerator.local_process_index}"
            self.accelerator = accelerator
            self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        device, torch_dtype = resolve_device_dtype(device, dtype)
        logger.info("Loading %s on %s (%s)", pretrained, device, torch_dtype)
        self._model, self._tokenizer = load_etchat(pretrained, revision=revision, dtype=torch_dtype, device=device)
        self._model.eval()
        self.batch_size_per_gpu = int(batch_size)
        self.num_workers, self.seed = int(num_workers), int(seed)

    @property
    def model(self):
        return self._model

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self):
        return self._model.device

    def _job(self, request: Instance) -> tuple[str, Job]:
        """(benchmark or OTHER, the job) of a request."""
        context, _, doc_to_visual, doc_id, task, split = request.args
        doc = self.task_dict[task][split][doc_id]
        conv_name = model_conv_type(self._model)
        if doc.get("benchmark") in TEXT_BENCHMARKS and "sample" in doc:
            sample = json.loads(doc["sample"])
            return doc["benchmark"], TEXT_BENCHMARKS[doc["benchmark"]].benchmark.build_job(
                sample, doc["data_path"], conv_name
            )
        visuals = doc_to_visual(doc) or [""]
        video = visuals[0] if isinstance(visuals[0], str) else ""
        key = f"{task}/{split}/{doc_id}"
        return OTHER, Job(key, {}, video, chat_prompt([], context, conv_name), context)

    def generate_until(self, requests: list[Instance]) -> list[str]:
        """The answer text of every request, in request order."""
        groups: dict[tuple[str, str], tuple[GenerationSettings, dict[str, Job]]] = {}
        keys = []
        for request in requests:
            kind, job = self._job(request)
            settings = decoding_settings(self._model, request.args[1])
            group = (kind, repr(settings))
            groups.setdefault(group, (settings, {}))[1][job.key] = job
            keys.append((group, job.key))
        answers = {
            group: self._answer(group[0], list(jobs.values()), settings) for group, (settings, jobs) in groups.items()
        }
        return [answers[group][key] for group, key in keys]

    def _answer(self, kind: str, jobs: list[Job], settings: GenerationSettings) -> dict[str, str]:
        """key -> answer text (with the matched fields the benchmark's record takes, or the error, attached)."""
        benchmark = TEXT_BENCHMARKS[kind] if kind != OTHER else None
        matched = benchmark.matched_fields if benchmark else ()

        def to_record(job, answer, loaded):
            record = benchmark.benchmark.to_record(job, answer, loaded) if benchmark else {}
            return {"key": job.key, "text": answer.text, "fields": {f: record[f] for f in matched if f in record}}

        def to_error(job, error):
            logger.warning("%s: %s", job.key, error)
            return {"key": job.key, "text": "", "fields": {"error": error}}

        store = Answers()
        run_jobs(
            self._model,
            self._tokenizer,
            jobs,
            store,
            settings,
            to_record,
            to_error,
            batch_size=self.batch_size_per_gpu,
            num_workers=self.num_workers,
            seed=self.seed,
            desc=f"etchat {kind}",
            time_fields=benchmark.benchmark.time_fields if benchmark else (),
        )
        if benchmark is None:  # another project's task: its scorer reads the text alone
            return {key: r["text"] for key, r in store.records.items()}
        return {key: attach_record(r["text"], r["fields"]) for key, r in store.records.items()}

    def loglikelihood(self, requests):
        raise NotImplementedError("E.T. Chat answers generation tasks only (output_type: generate_until)")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("E.T. Chat answers single-turn generation tasks only")
