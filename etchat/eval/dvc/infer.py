"""Dense video captioning inference on YouCook2 and ActivityNet Captions (docs/design.md §17), run by the shared
runner (`etchat.eval.runner`).

    python -m etchat.eval.dvc.infer --anno_path data/youcook2/youcookii_annotations_trainval.json \
        --data_path data/youcook2/videos --pred_path work_dirs/etchat-stage-3/youcook2 \
        --model_path work_dirs/etchat-stage-3 [--chunk k --index i]

Annotations: YouCook2's released file (its ``validation`` videos, asked `prompts.YOUCOOK2_QUESTION`) or an
ActivityNet Captions file such as ``val_1.json`` (every video, asked `prompts.ACTIVITYNET_QUESTION`); the layout
decides. The video of ``video_id`` is ``<data_path>/<video_id>`` + ``.mp4`` (or ``.mkv``, ``.webm`` when that
exists). The prompt is phi3 ``<image>\\n{question}`` with the published decoding; the answer is read back by E.T.
Bench's dense-caption rules (`etchat.eval.etbench.parsing.parse_dense_captions`: ``start - end, caption`` pieces)
into ``proposals`` ``[{"sentence", "timestamp": [start, end]}]`` (empty when nothing parses).

Shard ``i`` of ``k`` writes ``dvc_{i}.json``: per video ``video_id``, ``dataset``, ``duration``, ``timestamps``,
``sentences`` (the references), ``response`` and ``proposals``. ``python -m etchat.eval.dvc <pred_path>`` writes the
challenge submission and scores it (``scripts/inference_youcook2.sh``, ``scripts/inference_activitynet.sh``).
"""

from __future__ import annotations

import os

from etchat.data.conversation import chat_prompt
from etchat.eval.dvc.formats import STEM, check_references, read_json, youcook2_to_activitynet
from etchat.eval.dvc.prompts import QUESTIONS
from etchat.eval.etbench.parsing import parse_dense_captions
from etchat.eval.runner import Benchmark, Job, LoadedJob, main
from etchat.model.generation import MatchedAnswer

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm")


def load_videos(path: str | os.PathLike) -> list[dict]:
    """One sample per reference video of a YouCook2 (validation subset) or ActivityNet Captions file."""
    data = read_json(path)
    dataset = "youcook2" if isinstance(data, dict) and isinstance(data.get("database"), dict) else "activitynet"
    references = check_references(youcook2_to_activitynet(data["database"]) if dataset == "youcook2" else data, path)
    return [{"video_id": video, "dataset": dataset, **entry} for video, entry in references.items()]


def read_videos(path: str | os.PathLike) -> tuple[list[dict], list]:
    """`load_videos` for the runner: a bad reference file is refused whole (no sample is skipped)."""
    return load_videos(path), []


def sample_key(sample: dict) -> str:
    return sample["video_id"]


def video_path(sample: dict, data_path: str) -> str:
    return video_file(data_path, sample["video_id"])


def video_file(data_path: str, video_id: str) -> str:
    """The first existing ``<data_path>/<video_id><suffix>``; the .mp4 name when none exists (an error later)."""
    candidates = [os.path.join(data_path, video_id + suffix) for suffix in VIDEO_SUFFIXES]
    return next((path for path in candidates if os.path.exists(path)), candidates[0])


def build_job(sample: dict, data_path: str, conv_name: str = "phi3") -> Job:
    question = QUESTIONS[sample["dataset"]]
    return Job(
        key=sample_key(sample),
        sample=sample,
        video_path=video_path(sample, data_path),
        prompt=chat_prompt([], question, conv_name),
        query=question,
    )


def answer_proposals(text: str) -> list[dict]:
    spans, captions = parse_dense_captions(text)
    if spans is None:
        return []
    return [{"sentence": caption, "timestamp": span} for span, caption in zip(spans, captions)]


def to_record(job: Job, answer: MatchedAnswer, loaded: LoadedJob) -> dict:
    return {**job.sample, "response": answer.text, "proposals": answer_proposals(answer.text)}


def to_error(job: Job, error: str) -> dict:
    return {**job.sample, "response": "", "proposals": [], "error": error}


DENSE_CAPTIONING = Benchmark(
    name="Dense captioning",
    stem=STEM,
    load_samples=read_videos,
    sample_key=sample_key,
    video_path=video_path,
    build_job=build_job,
    to_record=to_record,
    to_error=to_error,
    # Reference timestamps (ActivityNet's sometimes run past the video) go to the official scorer as they are.
    time_fields=(),
    answer_fields=("response", "proposals", "error"),
    prompt_texts=tuple(QUESTIONS[name] for name in sorted(QUESTIONS)),
)


if __name__ == "__main__":
    main(DENSE_CAPTIONING, description=__doc__)
