"""Batching dataset samples: padding, truncation and dummy frames for text-only samples (docs/design.md §6)."""

from __future__ import annotations

import logging

import torch

from etchat.constants import IGNORE_INDEX, MATCH_TOKEN, VIDEO_PLACEHOLDER, VIDEO_TOKEN_INDEX

logger = logging.getLogger(__name__)


class DataCollator:
    """Pad and truncate samples of ``SupervisedDataset`` into a batch.

    ``input_ids`` are right-padded with the pad token (EOS when the tokenizer has none), ``labels`` with -100, and
    ``attention_mask`` marks the real tokens. Sequences longer than ``model_max_length`` are cut at the end (a
    warning is logged once per collator).

    Truncation keeps the ``<vid>`` times consistent: the ``<vid>`` tokens of a sample stand for ``src + tgt`` in order
    (question before answer), so when the cut removes ``<vid>`` tokens, the times of the removed ones (the last
    entries: ``tgt`` first, then ``src``) are dropped too. Likewise a multi-turn sample keeps the queries of the
    placeholders left (one left: its query as a str). A sample whose placeholders are all cut loses its frames: it is
    treated like a text-only sample, its ``query`` becomes "" and its ``src``/``tgt``/``tag`` None.

    Text-only samples get a dummy 1 x 3 x size x size zero clip so the vision path always runs; ``has_placeholder``
    (bool, one per sample) says which samples have a placeholder whose frames the model must insert.

    Batch keys: ``input_ids``, ``labels``, ``attention_mask``, ``images`` (list of T x 3 x size x size tensors),
    ``queries`` (per sample a str, or a list with one str per placeholder), ``src``, ``tgt``, ``tags`` (lists with
    None entries), ``has_placeholder``.
    """

    def __init__(self, tokenizer, model_max_length: int | None = None, image_size: int = 224):
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        if pad_id is None:
            raise ValueError(f"{type(tokenizer).__name__} has neither a pad token nor an EOS token to pad with")
        self.pad_token_id = pad_id
        # Without <vid> in the vocabulary there are no match tokens whose times truncation could cut.
        self.match_token_id = tokenizer.get_vocab().get(MATCH_TOKEN)
        self.model_max_length = model_max_length
        self.image_size = image_size
        self.warned_truncation = False

    def dummy_image(self) -> torch.Tensor:
        return torch.zeros(1, 3, self.image_size, self.image_size)

    def truncate(self, sample: dict) -> dict:
        input_ids, labels = sample["input_ids"], sample["labels"]
        if self.model_max_length is None or input_ids.numel() <= self.model_max_length:
            return sample
        if not self.warned_truncation:
            logger.warning(
                "A sample of %d tokens is truncated to model_max_length=%d (warned once)",
                input_ids.numel(),
                self.model_max_length,
            )
            self.warned_truncation = True

        sample = dict(sample, input_ids=input_ids[: self.model_max_length], labels=labels[: self.model_max_length])
        num_placeholders = int((sample["input_ids"] == VIDEO_TOKEN_INDEX).sum())
        if sample["image"] is not None and num_placeholders == 0:
            return dict(sample, image=None, query="", src=None, tgt=None, tag=None)
        query = sample.get("query")
        if isinstance(query, list) and len(query) > num_placeholders:
            sample["query"] = query[0] if num_placeholders == 1 else query[:num_placeholders]
        if self.match_token_id is not None:
            num_kept = int((sample["input_ids"] == self.match_token_id).sum())
            src = sample.get("src") or []
            kept_src = src[:num_kept]
            if sample.get("src") is not None:
                sample["src"] = kept_src
            if sample.get("tgt") is not None:
                sample["tgt"] = sample["tgt"][: num_kept - len(kept_src)]
        return sample

    @staticmethod
    def check_queries(samples: list[dict]) -> None:
        # The model fills placeholder k with the frames compressed with query k; a count mismatch would misalign them.
        for i, sample in enumerate(samples):
            if sample["image"] is None:
                continue
            query = sample.get("query", "")
            num_queries = len(query) if isinstance(query, list) else 1
            num_placeholders = int((sample["input_ids"] == VIDEO_TOKEN_INDEX).sum())
            if num_queries != num_placeholders:
                raise ValueError(
                    f"batch sample {i} has {num_placeholders} {VIDEO_PLACEHOLDER} placeholders but {num_queries} "
                    f"queries: {query!r}"
                )

    def __call__(self, samples: list[dict]) -> dict:
        samples = [self.truncate(sample) for sample in samples]
        self.check_queries(samples)
        max_len = max(sample["input_ids"].numel() for sample in samples)
        batch_size = len(samples)

        input_ids = torch.full((batch_size, max_len), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, max_len), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((batch_size, max_len), dtype=torch.long)
        for i, sample in enumerate(samples):
            length = sample["input_ids"].numel()
            input_ids[i, :length] = sample["input_ids"]
            labels[i, :length] = sample["labels"]
            attention_mask[i, :length] = 1

        has_placeholder = [sample["image"] is not None for sample in samples]
        return dict(
            input_ids=input_ids,
            labels=labels,
            attention_mask=attention_mask,
            images=[sample["image"] if has else self.dummy_image() for sample, has in zip(samples, has_placeholder)],
            queries=[sample.get("query", "") for sample in samples],
            src=[sample.get("src") for sample in samples],
            tgt=[sample.get("tgt") for sample in samples],
            tags=[sample.get("tag") for sample in samples],
            has_placeholder=torch.tensor(has_placeholder, dtype=torch.bool),
            # Bookkeeping the model does not read: which samples the batch holds, for error messages.
            sample_names=[sample.get("name") for sample in samples],
        )
