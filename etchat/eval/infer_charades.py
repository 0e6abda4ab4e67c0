"""Charades-STA moment retrieval inference (SPEC 10), resumable, sharded and batched like ``infer_etbench``.

    python -m etchat.eval.infer_charades --anno_path data/charades/charades_sta_test.txt \
        --data_path data/charades/videos --pred_path work_dirs/etchat-stage-3/charades_sta \
        --model_path work_dirs/etchat-stage-3 [--chunk k --index i]

Test file lines are ``VID start end##sentence``; the video is ``<data_path>/VID.mp4``. The question is
``Localize the video moment according to the query '{sentence without trailing period}'.`` (phi3 prompt
``<image>\\n{question}``, the question also being the Q-Former instruction), decoded with the published E.T. Bench
settings. The prediction ``pred`` is the list of times of the answer's ``<vid>`` tokens; a sample whose answer does
not hold exactly two is a failure when scored. Shard ``i`` of ``k`` writes ``charades_sta_{i}.json``
(``charades_sta.json`` for one shard), one record per line of the test file::

    {"idx": line number (0-based, blank lines skipped), "vid", "sentence", "query", "span": [start, end],
     "duration", "response", "pred", ["error"], ["sims", "frame_times", "match_times" with --save_sims]}

which is the input of ``etchat.eval.eval_grounding``. A single-shard run scores itself and writes ``metrics.json``;
with several shards score the folder afterwards (``scripts/inference_charades.sh`` does).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from etchat.eval.infer_etbench import (
    Job,
    LoadedJob,
    add_common_args,
    base_settings,
    build_prompt,
    collect,
    conv_type,
    describe_error,
    load_model,
    match_fields,
    run_jobs,
    setup,
)
from etchat.eval.io import ResultStore, shard, write_json_atomic
from etchat.model.generation import MatchedAnswer

logger = logging.getLogger(__name__)

QUESTION = "Localize the video moment according to the query '{}'."
STEM = "charades_sta"


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


def load_charades(path: str | os.PathLike) -> list[dict]:
    """One sample per non-blank line of a Charades-STA test file, with ``idx`` its position."""
    lines = [(n, line) for n, line in enumerate(Path(path).read_text().splitlines(), 1) if line.strip()]
    if not lines:
        raise ValueError(f"{path}: no samples")
    return [{"idx": idx, **parse_line(line, str(path), n)} for idx, (n, line) in enumerate(lines)]


def question(sentence: str) -> str:
    return QUESTION.format(sentence.strip().rstrip(".").strip())


def charades_key(record: dict) -> str:
    return str(record["idx"])


def charades_job(sample: dict, data_path: str, conv_name: str = "phi3") -> Job:
    text = question(sample["sentence"])
    return Job(
        key=charades_key(sample),
        sample={**sample, "query": text},
        video_path=os.path.join(data_path, f"{sample['vid']}.mp4"),
        prompt=build_prompt(text, conv_name),
        query=text,
    )


def charades_record_fn(save_sims: bool, verbose: bool = False):
    def to_record(job: Job, answer: MatchedAnswer, loaded: LoadedJob) -> dict:
        record = {**job.sample, "duration": loaded.duration, "response": answer.text, "pred": list(answer.times)}
        if save_sims:
            record.update(match_fields(answer, loaded.tags))
        if verbose:
            logger.info("%s %s -> %s pred %s", job.key, job.query, answer.text, answer.times)
        return record

    return to_record


def charades_error(job: Job, error: str) -> dict:
    return {**job.sample, "response": "", "pred": None, "error": error}


def run_charades(args: argparse.Namespace, model, tokenizer) -> list[dict]:
    """Answer shard ``args.index`` of ``args.chunk``; returns and writes its records (and scores a single shard)."""
    samples = shard(load_charades(args.anno_path), args.chunk, args.index)
    store = ResultStore(args.pred_path, STEM, args.chunk, args.index, charades_key)
    done = store.load()
    conv_name = conv_type(model)
    jobs = [charades_job(s, args.data_path, conv_name) for s in samples if charades_key(s) not in done]
    logger.info("%d samples in this shard, %d to answer", len(samples), len(jobs))
    new = run_jobs(
        model,
        tokenizer,
        jobs,
        store,
        base_settings(model, args.max_new_tokens, args.greedy),
        charades_record_fn(args.save_sims, args.verbose),
        to_error=charades_error,
        batch_size=args.batch_size,
        num_workers=args.num_workers,
        seed=args.seed,
        desc=f"Charades-STA {args.index}/{args.chunk}",
    )
    records = collect(store, args.chunk, [charades_key(s) for s in samples], done, new)
    store.write_final(records)
    if args.chunk == 1:
        score(records, Path(args.pred_path) / "metrics.json")
    if args.plot:
        from etchat.eval.plot import plot_records

        plot_records(records[: args.plot], Path(args.pred_path) / "plots", data_path=args.data_path)
    return records


def score(records: list[dict], out_path: Path) -> dict:
    from etchat.eval.eval_grounding import THRESHOLDS, grounding_scores

    try:
        scores = grounding_scores(records)
    except ValueError as error:
        logger.error("Could not score the predictions: %s", describe_error(error))
        return {}
    logger.info(
        "%s mIoU: %.3f Failed: %d (%.1f%%)",
        " ".join(f"R1@{t}: {scores[f'R1@{t}']:.3f}" for t in THRESHOLDS),
        scores["mIoU"],
        scores["Failed"],
        scores["FailureRate"] * 100,
    )
    write_json_atomic(out_path, scores)
    return scores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> list[dict]:
    args = parse_args(argv)
    setup(args)
    model, tokenizer = load_model(args)
    return run_charades(args, model, tokenizer)


if __name__ == "__main__":
    main()
