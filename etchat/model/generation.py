"""Decoding with `<vid>` matching (docs/design.md §5, §8).

At every step the second-to-last layer's state at the last position goes through `vid_head` and is matched against
the video's `frm_head` frame embeddings; when the token produced at that step is `<vid>`, its frame is that step's
best match, and the frame's token is added to the `<vid>` embedding when it is fed back. Everything a call produces
(text, times, frame indices, similarity curves) is returned; nothing is kept on the model.

The loop is written out rather than run through `GenerationMixin.generate` because every step both reads hidden
states and rewrites the next input embedding; it uses transformers' cache and logits processors.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
from transformers import (
    DynamicCache,
    LogitsProcessor,
    LogitsProcessorList,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from etchat.data.conversation import get_conv
from etchat.data.tokenization import fill_match_tokens, match_token_offsets
from etchat.model.modeling_etchat import FRAME_STATE, VID_STATE


class MatchAwareRepetitionPenalty(LogitsProcessor):
    """CTRL-style repetition penalty over the prompt and the generated tokens, sparing `<vid>` (docs/design.md §8).

    Works on a (batch, vocab) presence mask rather than on input ids, so each sample of a batch is penalised on its
    own tokens only (padding included in no row).
    """

    def __init__(self, penalty: float, match_token_id: int | None):
        if penalty <= 0:
            raise ValueError(f"repetition penalty must be > 0, got {penalty}")
        self.penalty = penalty
        self.match_token_id = match_token_id

    def __call__(self, seen: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        seen = seen.clone()
        if self.match_token_id is not None:
            seen[:, self.match_token_id] = False
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalised, scores)


@dataclass
class GenerationSettings:
    """How to decode. The defaults are the published E.T. Bench decoding: sampling at temperature 0.2 with top-k 50,
    at most 2048 new tokens, stopping at the template's end string."""

    max_new_tokens: int = 2048
    do_sample: bool = True
    temperature: float = 0.2
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float | None = None
    stop_strings: tuple[str, ...] = ("<|end|>",)
    eos_token_ids: tuple[int, ...] = ()
    vision_chunk_size: int = 64


def model_conv_type(model) -> str:
    """The chat template a model was trained with (phi3 when its config does not say)."""
    return getattr(model.config, "conv_type", None) or "phi3"


def published_settings(model, max_new_tokens: int | None = None, greedy: bool = False, **overrides):
    """The published decoding for `model`: stop at its template's end string or at one of its EOS ids.

    `greedy` replaces sampling by argmax; `overrides` set other `GenerationSettings` fields (e.g. temperature).
    """
    eos = model.generation_config.eos_token_id
    eos = () if eos is None else tuple(eos) if isinstance(eos, (list, tuple)) else (eos,)
    settings = GenerationSettings(stop_strings=(get_conv(model_conv_type(model)).stop_str,), eos_token_ids=eos)
    if max_new_tokens is not None:
        settings.max_new_tokens = max_new_tokens
    return replace(settings, do_sample=not greedy, **overrides)


def seeded_generator(device, seed: int | None, key: str | None = None) -> torch.Generator | None:
    """A generator seeded by `seed` (None: no seed, draw freshly), mixed with `key` when given, so that a sample's
    draws depend on its own name and not on what ran before it."""
    if seed is None:
        return None
    value = seed if key is None else (seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63
    return torch.Generator(device=device).manual_seed(value)


@dataclass
class MatchedAnswer:
    """One sample's answer: text with `<vid>` replaced by the matched frame index, and the matches themselves."""

    text: str
    raw_text: str
    token_ids: list[int]
    frame_indices: list[int] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    similarities: list[torch.Tensor] = field(default_factory=list)
    match_offsets: list[int] = field(default_factory=list)  # where in raw_text each `<vid>` token is


@dataclass
class GenerationRequest:
    """One sample to answer: prompt ids (with the -200 placeholder), its video, Q-Former instruction, `<vid>` times."""

    input_ids: torch.Tensor
    video: torch.Tensor
    query: str
    src: list[float] | None = None
    tags: list[float] | None = None


def _stop_sequences(tokenizer, settings: GenerationSettings) -> list[list[int]]:
    sequences = []
    for text in settings.stop_strings:
        ids = tokenizer(text, add_special_tokens=False).input_ids
        if ids:
            sequences.append(ids)
    return sequences


def _build_processors(settings: GenerationSettings) -> LogitsProcessorList:
    warpers = LogitsProcessorList()
    if settings.do_sample:
        if settings.temperature != 1.0:
            warpers.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k:
            warpers.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            warpers.append(TopPLogitsWarper(settings.top_p))
    return warpers


def _ends_with(tokens: list[int], sequence: list[int]) -> bool:
    return len(tokens) >= len(sequence) and tokens[-len(sequence) :] == sequence


@torch.inference_mode()
def generate(
    model,
    tokenizer,
    requests: list[GenerationRequest],
    settings: GenerationSettings | None = None,
    generator: torch.Generator | None = None,
    on_token: Callable[[int, int, tuple[int, torch.Tensor] | None], None] | None = None,
) -> list[MatchedAnswer]:
    """Answer a batch of samples, each with its own video and frame count.

    `on_token(sample_index, token_id, match)` is called for every new token (streaming); `match` is this step's
    (best frame index, similarity over frames), which is the token's frame when the token is `<vid>`. Greedy
    decoding of a batch gives the
    answers of decoding each sample alone.
    """
    settings = settings or GenerationSettings()
    device = model.device
    left_pad = torch.nn.utils.rnn.pad_sequence
    input_ids = left_pad([r.input_ids for r in requests], batch_first=True, padding_value=0, padding_side="left")
    attention_mask = left_pad(
        [torch.ones_like(r.input_ids) for r in requests], batch_first=True, padding_value=0, padding_side="left"
    )
    frame_tokens = model.encode_videos(
        [r.video for r in requests], [r.query for r in requests], [r.tags for r in requests], settings.vision_chunk_size
    )
    inputs = model.assemble_inputs(
        input_ids.to(device),
        attention_mask.to(device),
        None,
        frame_tokens,
        [r.src for r in requests],
        padding_side="left",
    )
    cache = DynamicCache(config=model.config)
    outputs = model(
        inputs_embeds=inputs.inputs_embeds,
        attention_mask=model.build_attention_mask(inputs),
        position_ids=inputs.position_ids,
        cache=cache,
        use_cache=True,
        logits_to_keep=1,
        output_hidden_states=[VID_STATE, FRAME_STATE],
    )
    frame_embeds = [None] * len(requests)
    if model.config.use_matching:
        frame_states = outputs.hidden_states[FRAME_STATE]
        frame_embeds = [
            model.frm_head(frame_states[i, slice(*spans[-1])]) for i, spans in enumerate(inputs.frame_spans)
        ]
    return _decode(model, tokenizer, requests, settings, generator, on_token, inputs, frame_embeds, outputs, cache)


def _decode(model, tokenizer, requests, settings, generator, on_token, inputs, frame_embeds, outputs, cache):
    device = model.device
    batch = len(requests)
    match_id = model.config.match_token_id
    warpers = _build_processors(settings)
    penalty = (
        MatchAwareRepetitionPenalty(settings.repetition_penalty, match_id) if settings.repetition_penalty else None
    )
    seen = torch.zeros(batch, model.config.vocab_size, dtype=torch.bool, device=device)
    for i, request in enumerate(requests):
        prompt_ids = request.input_ids[request.input_ids >= 0].to(device)
        seen[i, prompt_ids] = True
    stop_sequences = _stop_sequences(tokenizer, settings)
    eos_ids = set(settings.eos_token_ids)

    generated: list[list[int]] = [[] for _ in range(batch)]
    step_matches: list[list[tuple[int, torch.Tensor]]] = [[] for _ in range(batch)]
    finished = torch.zeros(batch, dtype=torch.bool, device=device)
    attention_mask = inputs.attention_mask
    position_ids = inputs.position_ids[:, -1:]
    for _ in range(settings.max_new_tokens):
        scores = outputs.logits[:, -1].float()
        matches = _match_frames(model, outputs.hidden_states[VID_STATE][:, -1], frame_embeds)
        if penalty is not None:
            scores = penalty(seen, scores)
        if settings.do_sample:
            probs = warpers(None, scores).softmax(-1)
            next_tokens = torch.multinomial(probs, 1, generator=generator).squeeze(1)
        else:
            next_tokens = scores.argmax(-1)
        for i in range(batch):
            if finished[i]:
                continue
            token = int(next_tokens[i])
            generated[i].append(token)
            step_matches[i].append(matches[i])
            seen[i, token] = True
            if on_token is not None:
                on_token(i, token, matches[i])
            if token in eos_ids or any(_ends_with(generated[i], seq) for seq in stop_sequences):
                finished[i] = True
        if bool(finished.all()):
            break
        next_embeds = _next_embeddings(model, next_tokens, matches, inputs.frame_tokens, match_id)
        attention_mask = torch.cat([attention_mask, attention_mask.new_ones(batch, 1)], dim=1)
        position_ids = position_ids + 1
        outputs = model(
            inputs_embeds=next_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            use_cache=True,
            output_hidden_states=[VID_STATE],
        )
    return [_finish(tokenizer, settings, generated[i], step_matches[i], match_id, requests[i]) for i in range(batch)]


def _match_frames(model, vid_states: torch.Tensor, frame_embeds) -> list[tuple[int, torch.Tensor] | None]:
    if not model.config.use_matching:
        return [None] * vid_states.size(0)
    vids = model.vid_head(vid_states)
    results = []
    for vid, frames in zip(vids, frame_embeds):
        sim = (frames @ vid).float().softmax(0)
        results.append((int(sim.argmax()), sim.cpu()))
    return results


def _next_embeddings(model, next_tokens, matches, frame_tokens, match_id):
    embeds = model.get_input_embeddings()(next_tokens)
    if match_id is None or not model.config.use_matching:
        return embeds[:, None]
    rows = []
    for i, token in enumerate(next_tokens):
        if int(token) == match_id:
            video_tokens = frame_tokens[i] if frame_tokens[i].dim() == 2 else frame_tokens[i][-1]
            rows.append(embeds[i] + video_tokens[matches[i][0]].to(embeds.dtype))
        else:
            rows.append(embeds[i])
    return torch.stack(rows)[:, None]


def _finish(tokenizer, settings, tokens, matches, match_id, request) -> MatchedAnswer:
    """The answer as the published inference writes it: every generated token decoded with special tokens kept
    (a final end-of-sequence token included), stripped, then the template's end string cut off the end of the text
    (docs/design.md §5)."""
    decoded = tokenizer.decode(tokens, skip_special_tokens=False)
    raw_text = _strip_stop_string(decoded.strip(), settings.stop_strings)
    vid_steps = [i for i, t in enumerate(tokens) if t == match_id]
    frame_indices = [matches[i][0] for i in vid_steps] if matches and matches[0] is not None else []
    similarities = [matches[i][1] for i in vid_steps] if frame_indices else []
    tags = request.tags
    times = [float(tags[f]) if tags is not None and f < len(tags) else float(f) for f in frame_indices]
    offsets = match_token_offsets(tokenizer, tokens, match_id, decoded) if vid_steps else []
    text = fill_match_tokens(raw_text, frame_indices, offsets=offsets) if frame_indices else raw_text
    return MatchedAnswer(
        text=text,
        raw_text=raw_text,
        token_ids=list(tokens),
        frame_indices=frame_indices,
        times=times,
        similarities=similarities,
        match_offsets=offsets,
    )


def _strip_stop_string(text: str, stop_strings) -> str:
    """`text` without the first of `stop_strings` it ends with (and the white space before it)."""
    for stop in stop_strings:
        if stop and text.endswith(stop):
            return text[: -len(stop)].strip()
    return text
