"""Train one stage of E.T. Chat (docs/design.md §6): `torchrun ... -m etchat.train.train --model_name_or_path ... ...`.

Stage 1 starts from a plain LLM (`--language_model phi3`) plus `--pretrain_vision_tower` / `--pretrain_qformer`;
stages 2 and 3 start from the previous stage's output. `--model_name_or_path` is a folder or a Hub repo id. A run
resumes from the newest complete `checkpoint-*` in `--output_dir`. See `scripts/train_stage_{1,2,3}.sh` for the
published settings.

Without a GPU the run uses the CPU with the gloo backend (fp32), under DDP or DeepSpeed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys

import torch
import transformers
from transformers import HfArgumentParser

from etchat.cli import setup_logging
from etchat.hub import ResolvedModel, resolve_model
from etchat.model.loading import (
    ADAPTER_FILE,
    PARTIAL_FILE,
    PROJECTOR_MODULES,
    CheckpointMismatchError,
    add_match_token,
    load_etchat,
)
from etchat.train.arguments import (
    VISION_TOWER_NAMES,
    DataArguments,
    ModelArguments,
    TrainingArguments,
    parse_json_arg,
)
from etchat.train.checkpoints import find_last_checkpoint
from etchat.train.trainer import (
    CheckpointResumeError,
    ETChatTrainer,
    NonFiniteTrainingError,
    select_trainable_parameters,
)

logger = logging.getLogger(__name__)
PROG = "python -m etchat.train.train"

MATCHING_HEADS = ("frm_head", "vid_head")


def init_cpu_distributed(argv: list[str]) -> bool:
    """Under torchrun without a GPU, set up the gloo process group through accelerate before the arguments are
    parsed (TrainingArguments then reuses it). DeepSpeed runs need accelerate to know it is DeepSpeed."""
    if torch.cuda.is_available() or "LOCAL_RANK" not in os.environ:
        return False
    from accelerate import PartialState

    pre_parser = argparse.ArgumentParser(prog=PROG, add_help=False)
    pre_parser.add_argument("--deepspeed", default=None)
    known, _ = pre_parser.parse_known_args(argv)
    if known.deepspeed:
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
        PartialState(backend="gloo")
        del os.environ["ACCELERATE_USE_DEEPSPEED"]
    else:
        PartialState(cpu=True, backend="gloo")
    return True


@contextlib.contextmanager
def zero3_init_disabled(training_args: TrainingArguments):
    """Build the model with whole tensors even under ZeRO-3 (DeepSpeed partitions it when training starts): loading
    the base `.pth` files writes into ordinary tensors."""
    from transformers.integrations.deepspeed import (
        is_deepspeed_zero3_enabled,
        set_hf_deepspeed_config,
        unset_hf_deepspeed_config,
    )

    if not is_deepspeed_zero3_enabled():
        yield
        return
    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        set_hf_deepspeed_config(training_args.hf_deepspeed_config)


def attention_implementation(bi_attention: bool) -> str:
    """sdpa (bidirectional frame blocks included); flash_attention_2 for purely causal runs on GPUs that have it."""
    if not bi_attention and torch.cuda.is_available() and transformers.utils.is_flash_attn_2_available():
        return "flash_attention_2"
    return "sdpa"


def resolve_start(model_args: ModelArguments) -> ResolvedModel:
    """The local folder of `--model_name_or_path` (a folder or a Hub repo id at `--model_revision`)."""
    if model_args.model_name_or_path is None:
        raise ValueError("--model_name_or_path is required")
    return resolve_model(model_args.model_name_or_path, model_args.model_revision)


def read_start_config(path: str) -> dict:
    config_path = os.path.join(path, "config.json")
    if not os.path.isfile(config_path):
        raise FileNotFoundError(f"--model_name_or_path {path}: no config.json there")
    with open(config_path) as f:
        return json.load(f)


def is_partial_checkpoint(path: str) -> bool:
    return os.path.isfile(os.path.join(path, ADAPTER_FILE)) or os.path.isfile(os.path.join(path, PARTIAL_FILE))


def config_overrides(model_args: ModelArguments, start_is_full_checkpoint: bool) -> dict:
    """Config fields the command line sets on top of the start checkpoint's config."""
    overrides = dict(
        vision_tower=VISION_TOWER_NAMES[model_args.vision_tower],
        vision_processor=model_args.vision_processor,
        vision_output_layer=model_args.vision_output_layer,
        vision_output_token=model_args.vision_output_token,
        mm_projector=model_args.mm_projector,
        use_matching=model_args.use_matching,
        use_time_tag=model_args.use_time_tag,
        bi_attention=model_args.bi_attention,
        alpha=model_args.alpha,
    )
    if model_args.conv_type is not None:
        overrides["conv_type"] = model_args.conv_type
    for key in ("pretrain_vision_tower", "pretrain_qformer", "pretrain_projector"):
        value = getattr(model_args, key)
        # A full checkpoint already holds every weight: its base files must not be loaded over them again.
        if value is not None or start_is_full_checkpoint:
            overrides[key] = value
    for key in ("vision_config", "qformer_config"):
        value = parse_json_arg(getattr(model_args, key), key)
        if value is not None:
            overrides[key] = value
    if model_args.num_query_tokens is not None:
        overrides["num_query_tokens"] = model_args.num_query_tokens
    if model_args.qformer_tokenizer_path is not None:
        overrides["qformer_tokenizer_path"] = model_args.qformer_tokenizer_path
    return overrides


def new_module_names(model_args: ModelArguments, start_config: dict) -> tuple[str, ...]:
    """Weights this stage creates: the projector when starting from a plain LLM without `--pretrain_projector`, and
    the matching heads when matching turns on for the first time."""
    from_plain_llm = not start_config.get("model_type", "").startswith("etchat_")
    new = []
    if from_plain_llm and not model_args.pretrain_projector:
        new += PROJECTOR_MODULES
    if model_args.use_matching and (from_plain_llm or not start_config.get("use_matching", False)):
        new += MATCHING_HEADS
    return tuple(new)


def build_model(model_args: ModelArguments, training_args: TrainingArguments):
    """The model to train (PEFT-wrapped with LoRA) with its trainable parameters selected, and its tokenizer."""
    start = resolve_start(model_args)
    path = start.path
    start_config = read_start_config(path)
    is_etchat = start_config.get("model_type", "").startswith("etchat_")
    dtype = torch.bfloat16 if training_args.bf16 else torch.float32
    with zero3_init_disabled(training_args):
        model, tokenizer = load_etchat(
            path,
            dtype=dtype,
            attn_implementation=attention_implementation(model_args.bi_attention),
            language_model=model_args.language_model,
            new_modules=new_module_names(model_args, start_config),
            **config_overrides(model_args, is_etchat and not is_partial_checkpoint(path)),
        )
        model.config.use_cache = False
        # The base a partial save of this stage builds on, by the name it was given (a Hub repo id stays portable),
        # pinned to the commit this run used.
        model.config.model_name_or_path = model_args.model_name_or_path
        model.config.model_revision = start.commit
        if model_args.use_matching:
            add_match_token(model, tokenizer)
    tokenizer.model_max_length = training_args.model_max_length
    if not training_args.fast_tokenizer:
        logger.warning("--fast_tokenizer False is ignored: transformers 5 tokenizers are always the fast ones")

    model.requires_grad_(False)
    if training_args.lora_enable:
        model = add_training_lora(model, training_args)
    trainable = select_trainable_parameters(model, training_args.tuning_mode, model_args.use_matching)
    log_trainable(model, trainable)
    return model, tokenizer


def add_training_lora(model, training_args: TrainingArguments):
    """LoRA on the decoder's attention projections with the command line's settings (etchat.model.lora)."""
    from etchat.model.lora import add_lora

    return add_lora(
        model,
        r=training_args.lora_r,
        alpha=training_args.lora_alpha,
        dropout=training_args.lora_dropout,
        bias=training_args.lora_bias,
    )


def log_trainable(model: torch.nn.Module, trainable: list[str]) -> None:
    total = sum(p.numel() for p in model.parameters())
    learnable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "Trainable: %d tensors, %d of %d parameters (%.2f%%)",
        len(trainable),
        learnable,
        total,
        100 * learnable / max(total, 1),
    )
    logger.debug("Trainable parameters:\n%s", "\n".join(trainable))


def check_save_format(model_args: ModelArguments, training_args: TrainingArguments) -> None:
    if not training_args.save_full_model and is_partial_checkpoint(resolve_start(model_args).path):
        raise ValueError(
            f"--model_name_or_path {model_args.model_name_or_path} is itself a partial checkpoint; a partial save "
            "on top of it could not be loaded. Use --save_full_model True, or start from a full checkpoint."
        )


def setup_training_logging(training_args: TrainingArguments) -> None:
    """Our messages at INFO on the main process only; transformers at the level TrainingArguments asks for."""
    setup_logging(logging.INFO if training_args.should_log else logging.WARNING, force=True)
    transformers.utils.logging.set_verbosity(training_args.get_process_log_level())


def build_parser() -> HfArgumentParser:
    return HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments),
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def dataset_options(model_args: ModelArguments, data_args: DataArguments) -> dict:
    """The options a training dataset (stage 1-3's or stage 4's prompts) takes from the arguments: the chat template
    (the flag's, else the start checkpoint's, else phi3), the vision processor and the time tags."""
    start_config = read_start_config(resolve_start(model_args).path)
    conv_type = model_args.conv_type or start_config.get("conv_type") or "phi3"
    if not data_args.anno_paths:
        raise ValueError("--anno_path is required")
    return dict(conv_type=conv_type, vision_processor=model_args.vision_processor, use_time_tag=model_args.use_time_tag)


def prepare(argv: list[str]):
    """Everything before the first step: arguments, model, data, trainer. Returns (trainer, model_args, args)."""
    init_cpu_distributed(argv)
    model_args, data_args, training_args = build_parser().parse_args_into_dataclasses(args=argv)
    setup_training_logging(training_args)
    check_save_format(model_args, training_args)

    from etchat.data.collator import DataCollator
    from etchat.data.dataset import SupervisedDataset

    # The annotations are read and checked before the model, which takes minutes to load at full size.
    dataset = SupervisedDataset(None, None, data_args, **dataset_options(model_args, data_args))
    # New weights (projector, matching heads, LoRA) must start the same on every rank and in every rerun.
    transformers.set_seed(training_args.seed)
    model, tokenizer = build_model(model_args, training_args)
    dataset.tokenizer = tokenizer  # the model's, with <vid> added when matching is on
    image_size = int(model_args.vision_processor.rsplit("_", 1)[-1])
    collator = DataCollator(tokenizer, training_args.model_max_length, image_size=image_size)

    trainer = ETChatTrainer(
        model=model, args=training_args, train_dataset=dataset, data_collator=collator, processing_class=tokenizer
    )
    logger.info(
        "Distributed: %s, %d process(es), device %s",
        trainer.accelerator.distributed_type,
        training_args.world_size,
        training_args.device,
    )
    return trainer, model_args, training_args


def train(argv: list[str] | None = None, prepare_run=None) -> None:
    """Prepare (``prepare_run``, this stage's `prepare` by default; stage 4 passes its own) and train."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        trainer, model_args, training_args = (prepare_run or prepare)(argv)
    except (OSError, ValueError, CheckpointMismatchError) as error:
        # Input a user can get wrong (files, annotations, options): one line naming it, not a traceback per rank.
        logger.error("%s", " ".join(str(error).split()))
        logger.debug("traceback", exc_info=True)
        sys.exit(2)
    run_training(trainer, model_args, training_args)


def run_training(trainer, model_args, training_args) -> None:
    """Train from the newest checkpoint of the output folder (if any), save the state and the final model; a
    checkpoint that does not load or a non-finite step ends the process with one line (stages 1-4)."""
    checkpoint = find_last_checkpoint(training_args.output_dir)
    if checkpoint:
        logger.info("Resuming from %s", checkpoint)
    try:
        trainer.train(resume_from_checkpoint=checkpoint)
        trainer.save_state()
        trainer.save_final_model(base_model_path=model_args.model_name_or_path)
    except CheckpointResumeError as error:
        logger.error("%s", error)
        sys.exit(2)
    except NonFiniteTrainingError as error:
        # One line naming the step and the samples; torchrun stops the other ranks.
        logger.error("%s", error)
        sys.exit(1)

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def main() -> None:
    train()


if __name__ == "__main__":
    main()
