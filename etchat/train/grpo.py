"""Stage 4: GRPO on E.T. Chat's answers, with each `<vid>` token's frame part of the action (docs/design.md §20).

For every prompt the policy samples `num_generations` answers. Tokens are drawn from softmax(logits / temperature);
at each `<vid>` token the frame is drawn from the matching distribution softmax(vid . frm / frame_temperature)
(`etchat.model.generation.sample_frame`), and its frame token goes into the `<vid>` embedding that is fed back, as in
decoding. A `<vid>` step's log-probability is the token's plus the frame's, so an answer's log-probability is the sum
of its token and frame log-probabilities. Rewards (`etchat.train.rewards`) read each answer as the E.T. Bench scorer
does. Advantages are group-normalised; groups whose rewards are all equal carry no signal and are skipped. The loss is
GRPO's: the clipped ratio objective plus beta times the k3 estimate of the KL divergence to the frozen start model.

The pieces here follow TRL's GRPO definitions and names (`num_generations`, `beta`, `epsilon`, `num_iterations`,
`scale_rewards`, `loss_type`, `reward_weights`); the trainer is E.T. Chat's (`ETChatTrainer`: DeepSpeed, LoRA,
checkpoints, resume), because TRL's GRPOTrainer can neither sample frames nor compute their log-probabilities (§20).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from etchat.model.generation import GenerationRequest, generate, published_settings, seeded_generator
from etchat.model.modeling_etchat import FRAME_STATE, VID_STATE
from etchat.train.rewards import REWARD_PARTS, TemporalRewards
from etchat.train.trainer import ETChatTrainer, _base_model

logger = logging.getLogger(__name__)

LOSS_TYPES = ("grpo", "bnpo")


@dataclass
class GRPOArguments:
    num_generations: int = field(default=8, metadata={"help": "answers sampled per prompt (the group)"})
    max_new_tokens: int = field(default=256, metadata={"help": "longest sampled answer, in tokens"})
    temperature: float = field(default=1.0, metadata={"help": "sampling temperature of the tokens"})
    frame_temperature: float = field(
        default=1.0, metadata={"help": "sampling temperature of the frame of each <vid> (matching softmax)"}
    )
    beta: float = field(default=0.04, metadata={"help": "weight of the KL divergence to the start model (0: off)"})
    epsilon: float = field(default=0.2, metadata={"help": "clipping range of the probability ratio"})
    epsilon_high: float | None = field(default=None, metadata={"help": "upper clipping range (default: epsilon)"})
    num_iterations: int = field(default=1, metadata={"help": "optimizer steps on each batch of sampled answers"})
    scale_rewards: bool = field(default=True, metadata={"help": "divide advantages by the group's reward std"})
    loss_type: str = field(
        default="grpo", metadata={"help": "grpo: mean over each answer's tokens, then answers; bnpo: over all tokens"}
    )
    reward_weights: list[float] = field(
        default_factory=lambda: [1.0, 1.0, 1.0], metadata={"help": "weights of the time, caption and format rewards"}
    )

    def __post_init__(self):
        if self.num_generations < 2:
            raise ValueError(f"--num_generations must be at least 2 (a group), got {self.num_generations}")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"--loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        if self.num_iterations < 1:
            raise ValueError(f"--num_iterations must be >= 1, got {self.num_iterations}")
        for name in ("temperature", "frame_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}")
        if len(self.reward_weights) != len(REWARD_PARTS):
            raise ValueError(f"--reward_weights takes {len(REWARD_PARTS)} numbers ({', '.join(REWARD_PARTS)})")


# ---- sampling ---------------------------------------------------------------------------------------------------
@dataclass
class Completion:
    """One sampled answer: everything the policy produced (stop string included), the frame of each `<vid>` it
    produced, the text the scorer reads, and its reward."""

    prompt: int  # index of its prompt in the batch
    token_ids: list[int]
    frames: list[int]
    text: str
    parts: dict[str, float] = field(default_factory=dict)
    reward: float = 0.0


def sample_completions(policy, tokenizer, prompts: list[dict], args: GRPOArguments, generator=None) -> list[Completion]:
    """`num_generations` answers per prompt, prompt by prompt, from one batched decoding."""
    use_matching = bool(policy.config.use_matching)
    match_id = policy.config.match_token_id
    settings = published_settings(
        policy,
        args.max_new_tokens,
        temperature=args.temperature,
        top_k=0,
        top_p=1.0,
        frame_temperature=args.frame_temperature if use_matching else None,
    )
    requests, owners = [], []
    for index, prompt in enumerate(prompts):
        for _ in range(args.num_generations):
            requests.append(
                GenerationRequest(prompt["input_ids"], prompt["video"], prompt["query"], prompt["src"], prompt["tags"])
            )
            owners.append(index)
    tokens = [[] for _ in requests]
    frames = [[] for _ in requests]

    def record(i: int, token: int, match) -> None:
        tokens[i].append(token)
        if use_matching and token == match_id:
            frames[i].append(match[0])

    answers = generate(policy, tokenizer, requests, settings, generator=generator, on_token=record)
    return [
        Completion(prompt=owner, token_ids=ids, frames=sampled, text=answer.text)
        for owner, ids, sampled, answer in zip(owners, tokens, frames, answers)
    ]


def group_advantages(rewards: torch.Tensor, scale: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages, kept) of rewards shaped (groups, num_generations): each reward minus its group's mean (divided by
    the group's std when `scale`), and which groups have rewards that vary (the others carry no signal)."""
    mean = rewards.mean(1, keepdim=True)
    kept = (rewards.amax(1) - rewards.amin(1)) > 1e-6
    advantages = rewards - mean
    if scale:
        advantages = advantages / (rewards.std(1, keepdim=True) + 1e-4)
    return advantages, kept


# ---- log-probabilities -------------------------------------------------------------------------------------------
def completion_log_probs(
    model, policy, prompts: list[dict], completions: list[Completion], args: GRPOArguments, pad_token_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probabilities (N, L) of every sampled token, a `<vid>` token's frame log-probability added; mask (N, L))
    under `model` (the callable, possibly wrapped by DeepSpeed/DDP/PEFT; `policy` is the E.T. Chat model inside it).

    The answers are teacher-forced after their prompts, each `<vid>` fed with its sampled frame as in decoding. The
    prompt holds one video placeholder: in the model's sequence it becomes the video's T frame tokens, so answer token
    k of a prompt of P ids (placeholder included) sits at P - 1 + T + k and is predicted at P - 2 + T + k (§4).
    """
    device = policy.device
    rows, images, queries, src, tgt, tags = [], [], [], [], [], []
    for completion in completions:
        prompt = prompts[completion.prompt]
        rows.append(torch.cat([prompt["input_ids"].cpu(), torch.tensor(completion.token_ids, dtype=torch.long)]))
        images.append(prompt["video"])
        queries.append(prompt["query"])
        src.append(prompt["src"])
        tgt.append([float(f) for f in completion.frames] if completion.frames else None)
        tags.append(prompt["tags"])
    lengths = torch.tensor([row.numel() for row in rows])
    input_ids = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=pad_token_id)
    attention_mask = (torch.arange(input_ids.size(1))[None] < lengths[:, None]).long()
    outputs = model(
        input_ids=input_ids.to(device),
        attention_mask=attention_mask.to(device),
        images=images,
        queries=queries,
        src=src,
        tgt=tgt,
        tags=tags,
    )
    longest = max(len(c.token_ids) for c in completions)
    log_probs = torch.zeros(len(completions), longest, device=device)
    mask = torch.zeros(len(completions), longest, device=device)
    match_id = policy.config.match_token_id
    vid_rows, vid_steps, vid_states, frame_states = [], [], [], []
    for i, completion in enumerate(completions):
        prompt_ids = prompts[completion.prompt]["input_ids"]
        num_frames = prompts[completion.prompt]["video"].size(0)
        first = prompt_ids.numel() - 2 + num_frames
        count = len(completion.token_ids)
        token_ids = torch.tensor(completion.token_ids, device=device)
        logits = outputs.logits[i, first : first + count].float() / args.temperature
        log_probs[i, :count] = logits.log_softmax(-1).gather(1, token_ids[:, None]).squeeze(1)
        mask[i, :count] = 1
        if completion.frames:
            steps = (token_ids == match_id).nonzero().flatten()
            placeholder = int((prompt_ids < 0).nonzero()[0])
            vid_rows.append(i)
            vid_steps.append(steps)
            vid_states.append(outputs.hidden_states[VID_STATE][i, first + steps])
            frame_states.append(outputs.hidden_states[FRAME_STATE][i, placeholder : placeholder + num_frames])
    if vid_rows:
        frame_log_probs = policy.match_log_probs(vid_states, frame_states, args.frame_temperature)
        for i, steps, scores in zip(vid_rows, vid_steps, frame_log_probs):
            chosen = scores.gather(1, torch.tensor(completions[i].frames, device=device)[:, None]).squeeze(1)
            log_probs[i] = log_probs[i].index_add(0, steps, chosen)
    elif policy.config.use_matching:
        # No frame was sampled: the heads still join the graph, so every rank's gradients cover the same parameters.
        (touch,) = policy.match_log_probs(
            [outputs.hidden_states[VID_STATE][0, :1]], [outputs.hidden_states[FRAME_STATE][0, :1]]
        )
        log_probs = log_probs + 0 * touch.sum()
    return log_probs, mask


def grpo_loss(
    log_probs: torch.Tensor,
    old_log_probs: torch.Tensor,
    ref_log_probs: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    args: GRPOArguments,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GRPO's loss of answers (N, L) with advantages (N,), and its KL and clipped share (means over tokens)."""
    ratio = torch.exp(log_probs - old_log_probs)
    high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    clipped = ratio.clamp(1 - args.epsilon, 1 + high)
    per_token = -torch.min(ratio * advantages[:, None], clipped * advantages[:, None])
    kl = torch.zeros_like(per_token)
    if ref_log_probs is not None and args.beta != 0:
        delta = ref_log_probs - log_probs
        kl = torch.exp(delta) - delta - 1
        per_token = per_token + args.beta * kl
    if args.loss_type == "grpo":
        loss = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()
    else:
        loss = (per_token * mask).sum() / mask.sum().clamp(min=1)
    was_clipped = ((ratio < 1 - args.epsilon) & (advantages[:, None] < 0)) | (
        (ratio > 1 + high) & (advantages[:, None] > 0)
    )
    tokens = mask.sum().clamp(min=1)
    stats = {"kl": (kl * mask).sum() / tokens, "clip_ratio": (was_clipped.float() * mask).sum() / tokens}
    return loss, {k: v.detach() for k, v in stats.items()}


# ---- the trainer ---------------------------------------------------------------------------------------------------
# Logged at every logging step: means over the answers (rewards, length), groups (std, skipped share) or tokens.
METRICS = ("reward", *(f"reward_{part}" for part in REWARD_PARTS), "reward_std", "skipped_groups", "kl")
METRICS += ("clip_ratio", "completion_length")


@dataclass
class RolloutBatch:
    prompts: list[dict]
    completions: list[Completion]  # of the groups that are kept
    advantages: torch.Tensor
    old_log_probs: torch.Tensor | None
    ref_log_probs: torch.Tensor | None


class GRPOTrainer(ETChatTrainer):
    """`ETChatTrainer` whose step samples answers, rewards them and takes a GRPO step. A batch is a list of prompts
    (`etchat.train.prompts.PromptDataset`); each process samples its prompts' groups itself. `ref_model` is the frozen
    start model (None when `beta` is 0)."""

    def __init__(self, *args, grpo_args: GRPOArguments, rewards: TemporalRewards, ref_model=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.grpo = grpo_args
        self.rewards = rewards
        self.ref_model = ref_model
        self._micro_step = 0
        self._buffer: dict[int, RolloutBatch] = {}
        self._metric_sums: dict[str, torch.Tensor] = {}
        self._metric_counts: dict[str, torch.Tensor] = {}

    # ---- one step --------------------------------------------------------------------------------------------------
    @staticmethod
    def batch_sample_names(inputs: list[dict]) -> list[str]:
        return [prompt.get("name") for prompt in inputs]

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        policy = _base_model(self.accelerator.unwrap_model(model))
        batch = self._rollouts(model, policy, inputs)
        self._micro_step += 1
        if not batch.completions:
            # Every group was skipped: a zero loss on one answer keeps the ranks' backward passes alike.
            return self._zero_loss(model, policy, inputs)
        log_probs, mask = completion_log_probs(model, policy, batch.prompts, batch.completions, self.grpo, self._pad_id)
        old = batch.old_log_probs if batch.old_log_probs is not None else log_probs.detach()
        loss, stats = grpo_loss(log_probs, old, batch.ref_log_probs, batch.advantages, mask, self.grpo)
        for name, value in stats.items():
            self._add_metric(name, value)
        return (loss, None) if return_outputs else loss

    def _rollouts(self, model, policy, prompts: list[dict]) -> RolloutBatch:
        """This micro-batch's answers: sampled now, or (with `num_iterations` > 1) those sampled for the same slot of
        the accumulation window at the first of the iterations."""
        slot = self._micro_step % self.args.gradient_accumulation_steps
        if self.grpo.num_iterations > 1 and self.state.global_step % self.grpo.num_iterations and slot in self._buffer:
            return self._buffer[slot]
        batch = self._sample_and_score(model, policy, prompts)
        if self.grpo.num_iterations > 1:
            self._buffer[slot] = batch
        return batch

    @torch.no_grad()
    def _sample_and_score(self, model, policy, prompts: list[dict]) -> RolloutBatch:
        was_training = policy.training
        policy.eval()
        # Seeded by the step, the place in the accumulation window and the process: a resumed run samples what the
        # unbroken run would have sampled.
        slot = self._micro_step % self.args.gradient_accumulation_steps
        key = f"{self.state.global_step}/{slot}/{self.args.process_index}"
        generator = seeded_generator(policy.device, self.args.seed, key)
        completions = sample_completions(policy, self.processing_class, prompts, self.grpo, generator)
        policy.train(was_training)

        for completion in completions:
            completion.parts = self.rewards.parts(completion.text, prompts[completion.prompt]["reference"])
            completion.reward = self.rewards.total(completion.parts)
        rewards = torch.tensor([c.reward for c in completions]).view(len(prompts), self.grpo.num_generations)
        advantages, kept = group_advantages(rewards, self.grpo.scale_rewards)
        self._log_rollouts(completions, rewards, kept)

        keep = [c for c in completions if kept[c.prompt]]
        batch = RolloutBatch(prompts, keep, advantages[kept].flatten().to(policy.device), None, None)
        if not keep:
            return batch
        pad_id = self._pad_id
        if self.grpo.num_iterations > 1:
            batch.old_log_probs, _ = completion_log_probs(model, policy, prompts, keep, self.grpo, pad_id)
        if self.ref_model is not None and self.grpo.beta != 0:
            reference = _base_model(self.ref_model)
            batch.ref_log_probs, _ = completion_log_probs(reference, reference, prompts, keep, self.grpo, pad_id)
        return batch

    @property
    def _pad_id(self) -> int:
        tokenizer = self.processing_class
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _zero_loss(self, model, policy, prompts: list[dict]) -> torch.Tensor:
        probe = Completion(prompt=0, token_ids=[self.processing_class.eos_token_id or 0], frames=[], text="")
        log_probs, _ = completion_log_probs(model, policy, prompts, [probe], self.grpo, self._pad_id)
        return 0 * log_probs.sum()

    # ---- logging ---------------------------------------------------------------------------------------------------
    def _add_metric(self, name: str, value, count: float = 1.0) -> None:
        value = torch.as_tensor(value, dtype=torch.float64).detach().cpu()
        self._metric_sums[name] = self._metric_sums.get(name, 0) + value * count
        self._metric_counts[name] = self._metric_counts.get(name, 0) + torch.tensor(count, dtype=torch.float64)

    def _log_rollouts(self, completions: list[Completion], rewards: torch.Tensor, kept: torch.Tensor) -> None:
        self._add_metric("reward", rewards.mean(), rewards.numel())
        for part in REWARD_PARTS:
            values = [c.parts[part] for c in completions if part in c.parts]
            if values:
                self._add_metric(f"reward_{part}", sum(values) / len(values), len(values))
        self._add_metric("reward_std", rewards.std(1).mean(), rewards.size(0))
        self._add_metric("skipped_groups", 1 - kept.float().mean(), kept.numel())
        self._add_metric("completion_length", sum(len(c.token_ids) for c in completions) / len(completions))

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # Training logs carry "loss"; every rank logs at the same step, so the reduction is collective-safe.
        if "loss" in logs:
            names = list(METRICS)
            sums = torch.tensor([float(self._metric_sums.get(n, 0)) for n in names], dtype=torch.float64)
            counts = torch.tensor([float(self._metric_counts.get(n, 0)) for n in names], dtype=torch.float64)
            totals = self.accelerator.reduce(torch.cat([sums, counts]).to(self.args.device), reduction="sum").cpu()
            for i, name in enumerate(names):
                if totals[len(names) + i] > 0:
                    logs[name] = round(float(totals[i] / totals[len(names) + i]), 6)
            self._metric_sums, self._metric_counts = {}, {}
        super().log(logs, start_time)
