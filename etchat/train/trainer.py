"""The E.T. Chat trainer: transformers' `Trainer` with the three-stage recipe's parameter selection and saving.

- Tuning modes pick the non-LoRA parameters that train (`select_trainable_parameters`).
- The optimizer gets weight-decay groups (no decay for biases and norms) and, with `lora_lr`, separate groups for
  the LoRA parameters at their own learning rate.
- Checkpoints of a PEFT model hold the adapter (Trainer) plus `pytorch_model.safetensors` with the non-LoRA
  trainables (ours), and resuming restores both.
- The LM and matching losses are logged next to the total loss (running means between two logs).
- The final model is saved whole (LoRA merged, published names) or as adapter + non-LoRA trainables; under ZeRO-3
  the partitioned parameters are gathered first.
- A non-finite loss, or a non-finite gradient norm (outside float16 loss scaling, whose overflowing steps are
  skipped by design), stops training at once with a `NonFiniteTrainingError` naming the step and the samples of the
  batch; no checkpoint or final model holding a non-finite weight is ever written (docs/design.md §13).
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch
from safetensors.torch import load_file
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from etchat.data.sampler import ModalityGroupedSampler
from etchat.io import give_default_modes
from etchat.model.loading import PARTIAL_FILE, save_etchat
from etchat.model.qformer import hf_to_published_key, published_to_hf_key
from etchat.train.checkpoints import save_safetensors_atomic

logger = logging.getLogger(__name__)

# The batch keys the model's training forward takes; the collator may add bookkeeping keys the model does not read.
MODEL_INPUT_KEYS = ("input_ids", "labels", "attention_mask", "images", "queries", "src", "tgt", "tags")
# Trained in addition to the tuning mode's parameters when `<vid>` matching is on.
MATCHING_MODULES = ("embed_tokens", "lm_head", "frm_head", "vid_head")


NUM_NAMES_SHOWN = 8


def _unloadable_state_file(checkpoint: str) -> str:
    """The optimizer or scheduler file of ``checkpoint`` that does not load (the folder when each loads alone)."""
    for name in ("optimizer.pt", "scheduler.pt"):
        path = os.path.join(checkpoint, name)
        if os.path.isfile(path):
            try:
                torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - any failure names this file
                return path
    return f"the optimizer or scheduler state of {checkpoint}"


class CheckpointResumeError(ValueError):
    """A checkpoint whose files are whole but do not load (a damaged optimizer.pt); the message names it."""


class NonFiniteTrainingError(RuntimeError):
    """Training produced a non-finite loss, gradient or weight; the message is one line naming the step and the
    samples of its batch."""


def non_finite_tensors(named_tensors) -> list[str]:
    """Names of the tensors holding a NaN or an infinity (empty ZeRO-3 placeholders count as finite)."""
    return [name for name, tensor in named_tensors if tensor.numel() and not torch.isfinite(tensor).all()]


def _names(names: list[str]) -> str:
    shown = [str(name) for name in names[:NUM_NAMES_SHOWN]]
    more = f" and {len(names) - NUM_NAMES_SHOWN} more" if len(names) > NUM_NAMES_SHOWN else ""
    return "; ".join(shown) + more if shown else "(unknown samples)"


# ---- which parameters train ----------------------------------------------------------------------------------------
def is_lora_parameter(name: str) -> bool:
    return "lora_" in name


def in_tuning_mode(name: str, tuning_mode: str) -> bool:
    """Whether parameter `name` trains in `tuning_mode` (the original's name rules).

    projector: the compressor's projections (qformer_proj, qformer_q/k/v_proj); qformer: everything of the
    compressor; attention: the Q-Former's self- and cross-attention layers plus every compressor part outside the BERT
    (queries, ln_vision, projections); llm: everything but the vision tower.
    """
    if tuning_mode == "projector":
        return ("qformer" in name and "proj" in name) or "mm_projector" in name
    if tuning_mode == "qformer":
        return "qformer" in name
    if tuning_mode == "attention":
        return "qformer" in name and ("attention" in name or "qformer_bert" not in name)
    if tuning_mode == "llm":
        return "vision_tower" not in name
    raise ValueError(f"unknown tuning mode {tuning_mode!r}")


def select_trainable_parameters(model: torch.nn.Module, tuning_mode: str, use_matching: bool) -> list[str]:
    """Set `requires_grad` of every non-LoRA parameter from the tuning mode (and matching); LoRA parameters keep
    theirs. Returns the names of all trainable parameters."""
    for name, param in model.named_parameters():
        if is_lora_parameter(name):
            continue
        matching = use_matching and any(module in name for module in MATCHING_MODULES)
        param.requires_grad_(in_tuning_mode(name, tuning_mode) or matching)
    return [name for name, param in model.named_parameters() if param.requires_grad]


def optimizer_param_groups(
    model: torch.nn.Module, decay_names: set[str] | list[str], weight_decay: float, lora_lr: float | None = None
) -> list[dict]:
    """Parameter groups: (non-LoRA, LoRA) x (decay, no decay); LoRA groups carry `lr=lora_lr`. Without `lora_lr`
    LoRA parameters share the base groups. Empty groups are left out."""
    decay_names = set(decay_names)
    buckets: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        key = (lora_lr is not None and is_lora_parameter(name), name in decay_names)
        buckets.setdefault(key, []).append(param)
    groups = []
    for is_lora, decay in ((False, True), (False, False), (True, True), (True, False)):
        params = buckets.get((is_lora, decay))
        if not params:
            continue
        group = {"params": params, "weight_decay": weight_decay if decay else 0.0}
        if is_lora:
            group["lr"] = lora_lr
        groups.append(group)
    return groups


# ---- ZeRO-3 aware state dicts -----------------------------------------------------------------------------------
@contextlib.contextmanager
def gathered_parameters(params):
    """Full tensors of ZeRO-3-partitioned `params` inside the block (read only); a no-op for ordinary tensors."""
    partitioned = [p for p in params if hasattr(p, "ds_id")]
    if not partitioned:
        yield
        return
    import deepspeed

    with deepspeed.zero.GatheredParameters(partitioned, modifier_rank=None):
        yield


def non_lora_trainable_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """CPU copies of the trainable parameters that are not LoRA weights, under the published names (a PEFT model's
    `base_model.model.` prefix is kept, as the original writes it). Every rank must call this under ZeRO-3."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad and not is_lora_parameter(n)]
    with gathered_parameters([p for _, p in named]):
        return {hf_to_published_key(n): p.detach().cpu().clone().contiguous() for n, p in named}


def load_trainable_weights(model: torch.nn.Module, path: str) -> list[str]:
    """Load a `non_lora_trainable_state_dict` file back into the same (possibly PEFT-wrapped) model."""
    state_dict = {published_to_hf_key(k): v for k, v in load_file(path).items()}
    own = model.state_dict()
    unknown = sorted(state_dict.keys() - own.keys())
    if unknown:
        raise RuntimeError(f"{path}: weights the model does not have: {unknown[:10]}")
    model.load_state_dict(state_dict, strict=False)
    return sorted(state_dict)


def _is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def _base_model(model):
    return model.get_base_model() if _is_peft_model(model) else model


class ETChatTrainer(Trainer):
    """`Trainer` for E.T. Chat. Extra `TrainingArguments` fields it reads: `lora_lr`, `group_by_modality`,
    `save_full_model` (see `etchat.train.arguments`)."""

    # The model returns a per-batch mean; the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, **kwargs):
        self._grouped_sampler: ModalityGroupedSampler | None = None
        super().__init__(*args, **kwargs)
        # The matching loss is a per-batch mean, so token-count normalisation across the accumulated batch must not
        # be applied to the LM loss alone.
        self.model_accepts_loss_kwargs = False
        self._loss_sums: torch.Tensor | None = None  # lm_loss sum, match_loss sum, batch count since the last log
        self._has_match_loss = bool(getattr(_base_model(self.model).config, "use_matching", False))
        self._step_samples: list[str] = []  # the samples of the optimizer step being accumulated

    # ---- data ------------------------------------------------------------------------------------------------------
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not getattr(self.args, "group_by_modality", False):
            return super()._get_train_sampler(train_dataset)
        # As in the original: a step's batches (all ranks) are either all with frames or all text-only.
        groups = ["text" if modality == "text" else "vision" for modality in dataset.modalities]
        self._grouped_sampler = ModalityGroupedSampler(
            dataset.lengths,
            groups,
            batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            seed=self.args.seed,
        )
        return self._grouped_sampler

    def _run_epoch(self, *args, **kwargs):
        # On resume, accelerate's skip_first_batches wraps the batch sampler so that set_epoch no longer reaches a
        # custom sampler, which would then replay epoch 0's order: set the epoch here.
        epoch = kwargs.get("epoch")
        if self._grouped_sampler is not None and epoch is not None:
            self._grouped_sampler.set_epoch(epoch)
        return super()._run_epoch(*args, **kwargs)

    # ---- optimisation ----------------------------------------------------------------------------------------------
    def create_optimizer(self, model=None):
        if self.optimizer is None:
            opt_model = self.model if model is None else model
            groups = optimizer_param_groups(
                opt_model,
                self.get_decay_parameter_names(opt_model),
                self.args.weight_decay,
                getattr(self.args, "lora_lr", None),
            )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, opt_model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return self.optimizer

    def training_step(self, model, inputs, num_items_in_batch=None):
        names = list(inputs.get("sample_names") or [])
        loss = super().training_step(model, inputs, num_items_in_batch)
        self._step_samples += names
        if not torch.isfinite(loss).all():
            raise NonFiniteTrainingError(
                f"step {self.state.global_step + 1}: the loss is {loss.float().mean().item()} on the batch of "
                f"{_names(names)}; training stops before the weights change (no checkpoint of it is written)"
            )
        return loss

    def _get_grad_norm(self, model, grad_norm=None):
        grad_norm = super()._get_grad_norm(model, grad_norm)
        samples, self._step_samples = self._step_samples, []
        # float16 loss scaling overflows now and then by design: that step is skipped and the scale lowered.
        if grad_norm is not None and not self.args.fp16 and not torch.isfinite(torch.as_tensor(grad_norm)).all():
            raise NonFiniteTrainingError(
                f"step {self.state.global_step + 1}: the gradient norm is {float(grad_norm)} on the batches of "
                f"{_names(samples)}; training stops before the weights change (no checkpoint of it is written)"
            )
        return grad_norm

    def check_finite_weights(self, model=None, what: str = "the model") -> None:
        """Refuse to save weights holding a NaN or an infinity (every rank must call this under ZeRO-3)."""
        model = self.model if model is None else model
        named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        with gathered_parameters([p for _, p in named]):
            bad = non_finite_tensors((n, p.detach()) for n, p in named)
        if bad:
            raise NonFiniteTrainingError(
                f"step {self.state.global_step}: {len(bad)} trained tensors of {what} hold NaN or infinite values "
                f"(e.g. {', '.join(bad[:3])}); nothing is saved"
            )

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**{key: inputs[key] for key in MODEL_INPUT_KEYS if key in inputs})
        if model.training:
            self._accumulate_loss_parts(outputs)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    def _accumulate_loss_parts(self, outputs) -> None:
        lm_loss = outputs.lm_loss if outputs.lm_loss is not None else outputs.loss
        match_loss = outputs.match_loss if outputs.match_loss is not None else torch.zeros_like(lm_loss)
        parts = torch.stack([lm_loss.detach().float(), match_loss.detach().float(), lm_loss.new_ones(()).float()])
        self._loss_sums = parts if self._loss_sums is None else self._loss_sums + parts

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Training logs carry "loss"; every rank logs them at the same step, so the reduction is collective-safe.
        if "loss" in logs and self._loss_sums is not None:
            sums = self.accelerator.reduce(self._loss_sums.to(self.args.device), reduction="sum")
            count = max(sums[2].item(), 1.0)
            logs["lm_loss"] = round(sums[0].item() / count, 6)
            if self._has_match_loss:
                logs["match_loss"] = round(sums[1].item() / count, 6)
            self._loss_sums = None
        super().log(logs, start_time)

    # ---- checkpoints -----------------------------------------------------------------------------------------------
    def _save_checkpoint(self, model, trial):
        # Written before the Trainer's files: a checkpoint counts as complete only once trainer_state.json exists.
        folder = os.path.join(self._get_output_dir(trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        self.check_finite_weights(what=f"checkpoint {folder}")
        state_dict = non_lora_trainable_state_dict(self.model)
        if self.args.should_save:
            os.makedirs(folder, exist_ok=True)
            if state_dict:
                save_safetensors_atomic(state_dict, os.path.join(folder, PARTIAL_FILE))
            _base_model(self.model).config.save_pretrained(folder)
        super()._save_checkpoint(model, trial)
        if self.args.should_save:
            give_default_modes(folder)  # the safetensors writer under save_pretrained makes its files 0600

    def _load_optimizer_and_scheduler(self, checkpoint):
        try:
            super()._load_optimizer_and_scheduler(checkpoint)
        except Exception as error:  # a damaged file fails in the unpickler or the zip reader in many ways
            raise CheckpointResumeError(
                f"cannot resume: {_unloadable_state_file(checkpoint)} does not load ({type(error).__name__}: "
                f"{' '.join(str(error).split()).split('. ')[0][:200]}); remove {checkpoint} to resume from an earlier "
                "checkpoint, or give another --output_dir to start afresh"
            ) from error

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        model = self.model if model is None else model
        partial = os.path.join(resume_from_checkpoint, PARTIAL_FILE)
        trainable = {name for name, param in model.named_parameters() if param.requires_grad}
        # Frozen weights never change, so for a plain model the trainables file restores everything that trained.
        if _is_peft_model(model) or not os.path.isfile(partial):
            super()._load_from_checkpoint(resume_from_checkpoint, model)
        if os.path.isfile(partial):
            restored = load_trainable_weights(model, partial)
            logger.info("Restored %d non-LoRA trainable tensors from %s", len(restored), partial)
        # Loading an adapter may reset which parameters train; the optimizer is built from this selection.
        for name, param in model.named_parameters():
            param.requires_grad_(name in trainable)

    # ---- final model -----------------------------------------------------------------------------------------------
    def save_final_model(self, base_model_path: str, output_dir: str | None = None) -> None:
        """Write the trained model to `output_dir` (default: args.output_dir); every rank must call this.

        `save_full_model`: one E.T. Chat checkpoint, LoRA merged, published weight names. Otherwise: the adapter
        (`adapter_model.safetensors`, `adapter_config.json`) when LoRA is on, `pytorch_model.safetensors` with the
        non-LoRA trainables, and config (`model_name_or_path=base_model_path`), generation config and tokenizer.
        """
        output_dir = output_dir or self.args.output_dir
        model = self.model
        self.check_finite_weights(what=f"the final model for {output_dir}")
        config = _base_model(model).config
        config.model_name_or_path = base_model_path
        if self.args.save_full_model:
            with gathered_parameters(list(model.parameters())):
                if _is_peft_model(model):
                    model = model.merge_and_unload()
                # All weights are in the checkpoint: loading must not overwrite them with the base files.
                config.pretrain_vision_tower = config.pretrain_qformer = config.pretrain_projector = None
                config.load_base_models = False
                if self.args.should_save:
                    save_etchat(model, self.processing_class, output_dir)
                    give_default_modes(output_dir)
            logger.info("Saved the full model to %s", output_dir)
            return

        if _is_peft_model(model):
            with gathered_parameters([p for n, p in model.named_parameters() if is_lora_parameter(n)]):
                if self.args.should_save:
                    model.save_pretrained(output_dir, save_embedding_layers=False)
        state_dict = non_lora_trainable_state_dict(model)
        if self.args.should_save:
            os.makedirs(output_dir, exist_ok=True)
            if state_dict:
                save_safetensors_atomic(state_dict, os.path.join(output_dir, PARTIAL_FILE))
            config.save_pretrained(output_dir)
            _base_model(model).generation_config.save_pretrained(output_dir)
            self.processing_class.save_pretrained(output_dir)
            give_default_modes(output_dir)
        logger.info("Saved adapter and trainable weights to %s (base: %s)", output_dir, base_model_path)
