"""Stage 4 of E.T. Chat: GRPO from a stage-3 checkpoint (docs/design.md §20).

    torchrun ... -m etchat.train.train_grpo --model_name_or_path work_dirs/etchat-stage-3 --anno_path ... ...

The flags are stage 3's (`etchat.train.train`: model, data, LoRA, tuning mode, DeepSpeed, saving) plus GRPO's
(`etchat.train.grpo.GRPOArguments`: --num_generations, --temperature, --frame_temperature, --beta, --epsilon, ...).
`--per_device_train_batch_size` counts prompts; each is answered `--num_generations` times. A run resumes from the
newest complete `checkpoint-*` in `--output_dir`. See `scripts/train_stage_4.sh` for the settings.
"""

from __future__ import annotations

import argparse
import copy
import logging

import torch
import transformers
from transformers import HfArgumentParser

from etchat.train.arguments import DataArguments, ModelArguments, TrainingArguments
from etchat.train.grpo import GRPOArguments, GRPOTrainer
from etchat.train.rewards import TemporalRewards
from etchat.train.train import (
    build_model,
    check_save_format,
    dataset_options,
    init_cpu_distributed,
    setup_training_logging,
)
from etchat.train.train import train as train_stage

logger = logging.getLogger(__name__)


def keep_as_list(prompts: list[dict]) -> list[dict]:
    """The collator of stage 4: prompts stay a list (each has its own video and length)."""
    return prompts


def reference_model(model, training_args: TrainingArguments):
    """The frozen start model the KL term compares with: a copy of the policy before its first step (LoRA's B
    matrices start at zero, so its adapters change nothing yet)."""
    reference = copy.deepcopy(model).requires_grad_(False).eval()
    dtype = torch.bfloat16 if training_args.bf16 else torch.float16 if training_args.fp16 else None
    return reference.to(device=training_args.device, dtype=dtype)


PROG = "python -m etchat.train.train_grpo"


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments, GRPOArguments),
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def prepare(argv: list[str]):
    """Arguments, policy, reference model, prompts and trainer. Returns (trainer, model_args, training_args)."""
    init_cpu_distributed(argv)
    model_args, data_args, training_args, grpo_args = build_parser().parse_args_into_dataclasses(args=argv)
    setup_training_logging(training_args)
    check_save_format(model_args, training_args)
    if training_args.ddp_find_unused_parameters is None:
        # The matching heads run on the hidden states the wrapped forward returns, so DDP's search for unused
        # parameters would mark them ready before their gradients arrive. Every trainable parameter gets a gradient
        # at every step (the heads through a zero term when no frame was sampled), so no search is needed.
        training_args.ddp_find_unused_parameters = False

    from etchat.train.prompts import PromptDataset

    prompts = PromptDataset(data_args, **dataset_options(model_args, data_args))
    transformers.set_seed(training_args.seed)
    model, tokenizer = build_model(model_args, training_args)
    prompts.tokenizer = tokenizer
    ref_model = reference_model(model, training_args) if grpo_args.beta != 0 else None
    rewards = TemporalRewards(tuple(grpo_args.reward_weights), device="cpu")
    trainer = GRPOTrainer(
        model=model,
        args=training_args,
        train_dataset=prompts,
        data_collator=keep_as_list,
        processing_class=tokenizer,
        grpo_args=grpo_args,
        rewards=rewards,
        ref_model=ref_model,
    )
    logger.info(
        "Stage 4: %d prompts, %d answers each, %d process(es), device %s",
        len(prompts),
        grpo_args.num_generations,
        training_args.world_size,
        training_args.device,
    )
    return trainer, model_args, training_args


def train(argv: list[str] | None = None) -> None:
    """Stage 4 with the other stages' error handling (`etchat.train.train.train`)."""
    train_stage(argv, prepare)


def main() -> None:
    train()


if __name__ == "__main__":
    main()
