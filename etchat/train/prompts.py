"""Stage-4 prompts (docs/design.md §20): the questions of a stage-3 annotation file, asked as inference asks them, each
with its video and the reference answer its rewards compare with.

The files, filters and checks are those of training (`SupervisedDataset`, §6, §15). On top of them a sample is used
when it has a video and its task has a reward (`etchat.train.rewards`) whose reference answer parses; the others are
left out with a count per reason in the log. Only the first user turn of a sample is asked.
"""

from __future__ import annotations

import logging
from collections import Counter

from etchat.constants import MATCH_TOKEN
from etchat.data.conversation import chat_prompt, question_text
from etchat.data.dataset import DataArguments, SupervisedDataset, match_token_count, modality_of, write_times
from etchat.data.tokenization import fill_match_tokens, tokenize
from etchat.train.rewards import Reference, reference_problem, reward_kind

logger = logging.getLogger(__name__)


def first_turn(sample: dict, times_as_text: bool) -> tuple[str, str, list | None, list | None]:
    """(question, reference answer, the question's `<vid>` times, the answer's `<vid>` times) of the first turn; the
    `<vid>` tokens of a sample stand for `src + tgt` in turn order (question times in `src`, answer times in `tgt`)."""
    question = sample["conversations"][0]["value"]
    answer = sample["conversations"][1]["value"]
    if times_as_text:
        return question, answer, None, None
    src = list(sample.get("src") or [])[: question.count(MATCH_TOKEN)]
    tgt = list(sample.get("tgt") or [])[: answer.count(MATCH_TOKEN)]
    return question, answer, src, tgt


def reference_of(sample: dict, duration: float) -> Reference:
    """The first answer with its `<vid>` tokens written as seconds, as inference writes an answer."""
    times_as_text = not match_token_count(sample)
    _, answer, _, tgt = first_turn(sample, times_as_text)
    if tgt:
        answer = fill_match_tokens(answer, tgt)
    return Reference(task=sample.get("task"), answer=answer.strip(), duration=float(duration))


class PromptDataset(SupervisedDataset):
    """`__getitem__` gives `input_ids` (the inference prompt, -200 for the video), `video` (T x 3 x H x W frames),
    `query` (the Q-Former instruction), `src` (the question's `<vid>` times, None for times written as text), `tags`
    (frame times, with `use_time_tag` only), `reference` (`Reference`) and `name`."""

    def __init__(
        self,
        args: DataArguments,
        tokenizer=None,
        *,
        conv_type: str = "phi3",
        vision_processor: str = "clip_center_224",
        use_time_tag: bool = False,
    ):
        super().__init__(
            None, tokenizer, args, conv_type=conv_type, vision_processor=vision_processor, use_time_tag=use_time_tag
        )
        kept, reasons = [], Counter()
        for sample, origin in zip(self.samples, self.origins):
            reason = self._unusable(sample)
            if reason is None:
                kept.append((sample, origin))
            else:
                reasons[reason] += 1
        if reasons:
            logger.info(
                "Stage-4 prompts: %d of %d samples left out (%s)",
                sum(reasons.values()),
                len(self.samples),
                ", ".join(f"{reason}: {count}" for reason, count in reasons.most_common()),
            )
        if not kept:
            raise ValueError(
                f"No sample of {self.annotation_paths} can be asked in stage 4 (no video task with a reward)"
            )
        self.samples = [sample for sample, _ in kept]
        self.origins = [origin for _, origin in kept]

    @staticmethod
    def _unusable(sample: dict) -> str | None:
        if modality_of(sample) != "video":
            return "not a video sample"
        if reward_kind(sample.get("task")) is None:
            return f"no reward for task {sample.get('task')!r}"
        if reference_problem(reference_of(sample, sample.get("duration") or 1.0)) is not None:
            return "reference answer does not parse"
        return None

    def load(self, idx: int) -> dict:
        sample, args = self.samples[idx], self.args
        frames, tags = self.load_video_frames(self.media_path(idx))
        question, _, src, _ = first_turn(sample, times_as_text=not match_token_count(sample))
        if self.use_time_tag and src:
            question, src = write_times(question, src), None  # the times become text, as in training
        question = question_text(question)
        duration = sample.get("duration") or frames.size(0) / args.fps
        return dict(
            input_ids=tokenize(chat_prompt([], question, self.conv_type), self.tokenizer),
            video=frames,
            query=question,
            src=src,
            tags=tags if self.use_time_tag else None,
            reference=reference_of(sample, duration),
            name=self.sample_name(idx),
        )
