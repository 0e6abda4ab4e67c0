"""Modality-grouped, length-balanced sampling (the original's ``group_by_modality`` option).

Samples are grouped by modality. Within a group, a random permutation is cut into steps of
``batch_size * world_size`` samples; each step is sorted by length and dealt out to the ``world_size`` ranks so that
their total lengths are balanced. Steps are gathered into megabatches of ``gradient_accumulation_steps`` steps,
a group's last incomplete megabatch is dropped (so no megabatch mixes modalities), and the megabatches of all groups
are shuffled together. The trainer's batch sampler must give rank ``r`` the ``r``-th ``batch_size`` slice of every
step, which is how Hugging Face Accelerate shards a sampler over processes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence

import torch
from torch.utils.data import Sampler

logger = logging.getLogger(__name__)


def split_balanced(indices: list[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Deal ``indices`` (longest first) into ``num_chunks`` equal chunks, each to the chunk with the least total length.

    When ``indices`` cannot be split evenly, chunks take every ``num_chunks``-th index instead.
    """
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    chunk_size = len(indices) // num_chunks
    chunks = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for idx in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(idx)
        totals[shortest] += lengths[idx]
        if len(chunks[shortest]) == chunk_size:
            totals[shortest] = float("inf")  # full
    return chunks


def length_grouped_indices(
    lengths: Sequence[int], batch_size: int, world_size: int, generator: torch.Generator | None = None
) -> list[int]:
    """A random order of ``range(len(lengths))`` where each step of ``batch_size * world_size`` is length-balanced."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    step = batch_size * world_size
    result = []
    for start in range(0, len(order), step):
        chunk = sorted(order[start : start + step], key=lambda i: lengths[i], reverse=True)
        for rank_batch in split_balanced(chunk, lengths, world_size):
            result.extend(rank_batch)
    return result


def modality_grouped_indices(
    lengths: Sequence[int],
    modalities: Sequence[Hashable],
    batch_size: int,
    world_size: int = 1,
    gradient_accumulation_steps: int = 1,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Sample order in which every megabatch of ``batch_size * world_size * gradient_accumulation_steps`` indices
    has a single modality (see the module docstring). Incomplete megabatches are left out."""
    if len(lengths) != len(modalities):
        raise ValueError(f"{len(lengths)} lengths but {len(modalities)} modalities")
    step = batch_size * world_size
    megabatch_size = step * gradient_accumulation_steps

    groups: dict[Hashable, list[int]] = {}
    for idx, modality in enumerate(modalities):
        groups.setdefault(modality, []).append(idx)

    megabatches = []
    for modality in sorted(groups, key=str):  # a fixed group order keeps the result a function of the generator
        members = groups[modality]
        order = length_grouped_indices([lengths[i] for i in members], batch_size, world_size, generator)
        shuffled = [members[i] for i in order]
        num_full = len(shuffled) // megabatch_size * megabatch_size
        megabatches.extend(shuffled[i : i + megabatch_size] for i in range(0, num_full, megabatch_size))

    permutation = torch.randperm(len(megabatches), generator=generator).tolist()
    return [idx for i in permutation for idx in megabatches[i]]


class ModalityGroupedSampler(Sampler[int]):
    """Sampler yielding ``modality_grouped_indices``; the order depends only on ``seed`` and the epoch.

    ``modalities`` can be any labels: the dataset's 'image' / 'video' / 'text' keep the three apart; mapping image
    and video to one label groups like the original (vision samples vs text-only samples). Every rank must build it
    with the same seed.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        modalities: Sequence[Hashable],
        batch_size: int,
        world_size: int = 1,
        gradient_accumulation_steps: int = 1,
        seed: int = 0,
    ):
        if min(batch_size, world_size, gradient_accumulation_steps) < 1:
            raise ValueError(
                f"batch_size, world_size and gradient_accumulation_steps must be >= 1, got "
                f"{batch_size}, {world_size}, {gradient_accumulation_steps}"
            )
        if len(lengths) != len(modalities):
            raise ValueError(f"{len(lengths)} lengths but {len(modalities)} modalities")
        self.lengths = list(lengths)
        self.modalities = list(modalities)
        self.batch_size = batch_size
        self.world_size = world_size
        self.gradient_accumulation_steps = gradient_accumulation_steps
        self.seed = seed
        self.epoch = 0

        megabatch_size = batch_size * world_size * gradient_accumulation_steps
        sizes = dict(Counter(self.modalities))
        self.num_samples = sum(n // megabatch_size * megabatch_size for n in sizes.values())
        if self.num_samples == 0:
            raise ValueError(f"No modality has a full megabatch of {megabatch_size} samples: {sizes}")
        if self.num_samples < len(self.lengths):
            logger.info(
                "Modality grouping leaves out %d of %d samples per epoch (incomplete megabatches of %d): %s",
                len(self.lengths) - self.num_samples,
                len(self.lengths),
                megabatch_size,
                sizes,
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + self.epoch)
        indices = modality_grouped_indices(
            self.lengths,
            self.modalities,
            self.batch_size,
            self.world_size,
            self.gradient_accumulation_steps,
            generator,
        )
        return iter(indices)
