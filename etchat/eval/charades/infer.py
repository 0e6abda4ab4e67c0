"""Charades-STA moment retrieval inference (docs/design.md §10), run by the shared runner.

    python -m etchat.eval.charades.infer --anno_path data/charades/charades_sta_test.txt \
        --data_path data/charades/videos --pred_path work_dirs/etchat-stage-3/charades_sta \
        --model_path work_dirs/etchat-stage-3 [--chunk k --index i]

Test file lines are ``VID start end##sentence``; the video is ``<data_path>/VID.mp4``. The question is
``Localize the video moment according to the query '{sentence without trailing period}'.`` (phi3 prompt
``<image>\\n{question}``, the question also being the Q-Former instruction), decoded with the published settings. The
prediction ``pred`` is the list of times of the answer's ``<vid>`` tokens; a sample whose answer does not hold exactly
two is a failure when scored. Shard ``i`` of ``k`` writes ``charades_sta_{i}.json`` (``charades_sta.json`` for one
shard), one record per line of the test file::

    {"idx": line number (0-based, blank lines skipped), "vid", "sentence", "query", "span": [start, end],
     "duration", "response", "pred", ["error"], ["sims", "frame_times", "match_times" with --save_sims]}

which ``python -m etchat.eval.charades <pred_path>`` scores (``scripts/inference_charades.sh`` runs both).
"""

from __future__ import annotations

import os
from pathlib import Path

from etchat.data.conversation import chat_prompt
from etchat.data.sample_checks import Problem, report_problems
from etchat.eval.runner import Benchmark, Job, LoadedJob, main
from etchat.model.generation import MatchedAnswer

QUESTION = "Localize the video moment according to the query '{}'."


def parse_line(line: str, path: str, number: int) -> dict:
    """``VID start end##sentence`` -> {vid, span (ordered), sentence}; a malformed line names file and line."""
    head, sep, sentence = line.partition("##")
    fields = head.split()
    if not sep or len(fields) != 3 or not sentence.strip():
        raise ValueError(f"{path}:{number}: expected 'VID start end##sentence', got {line.strip()!r}")
    try:
        start, end = float(fields[1]), float(fields[2])
    except ValueError as error:
        raise ValueError(f"{path}:{number}: start/end are not numbers in {line.strip()!r}") from error
    return {"vid": fields[0], "sentence": sentence.strip(), "span": [min(start, end), max(start, end)]}


def read_charades(path: str | os.PathLike) -> tuple[list[dict], list[Problem]]:
    """One sample per well-formed non-blank line of a Charades-STA test file, with ``idx`` its position among the
    non-blank lines; and the problems of the malformed lines, which are left out."""
    lines = [(n, line) for n, line in enumerate(Path(path).read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"{path}: no samples")
    samples, problems = [], []
    for idx, (number, line) in enumerate(lines):
        try:
            samples.append({"idx": idx, **parse_line(line, str(path), number)})
        except ValueError as error:
            problems.append(Problem("malformed", str(error)))
    return samples, problems


def load_charades(path: str | os.PathLike) -> list[dict]:
    """Every sample of `read_charades`; a malformed line is an error naming the file and the line."""
    samples, problems = read_charades(path)
    report_problems(problems, len(samples) + len(problems), "Charades-STA lines", strict=True)
    return samples


def question(sentence: str) -> str:
    return QUESTION.format(sentence.strip().rstrip(".").strip())


def sample_key(record: dict) -> str:
    return str(record["idx"])


def video_path(sample: dict, data_path: str) -> str:
    return os.path.join(data_path, f"{sample['vid']}.mp4")


def build_job(sample: dict, data_path: str, conv_name: str = "phi3") -> Job:
    text = question(sample["sentence"])
    return Job(
        key=sample_key(sample),
        sample={**sample, "query": text},
        video_path=video_path(sample, data_path),
        prompt=chat_prompt([], text, conv_name),
        query=text,
    )


def to_record(job: Job, answer: MatchedAnswer, loaded: LoadedJob) -> dict:
    return {**job.sample, "duration": loaded.duration, "response": answer.text, "pred": list(answer.times)}


def to_error(job: Job, error: str) -> dict:
    return {**job.sample, "response": "", "pred": None, "error": error}


CHARADES_STA = Benchmark(
    name="Charades-STA",
    stem="charades_sta",
    load_samples=read_charades,
    sample_key=sample_key,
    video_path=video_path,
    build_job=build_job,
    to_record=to_record,
    to_error=to_error,
    time_fields=("span",),
    answer_fields=("duration", "response", "pred", "error"),
    prompt_texts=(QUESTION,),
)


if __name__ == "__main__":
    main(CHARADES_STA, description=__doc__)
