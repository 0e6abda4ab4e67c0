"""E.T. Chat: a video LLM that answers with `<vid>` tokens matched against the frames (docs/design.md §2-5).

Data flows one way: frames -> EVA-ViT patch features -> Q-Former compressor (one token per frame) -> the frame tokens
replace the video placeholder in the LLM's input -> text, with the `<vid>` tokens' times read off by matching.

The model is a mixin over a Hugging Face causal LM (Phi-3 as published; Qwen2 and Llama by configuration), so the
weights keep the published names: `model.vision_tower.*`, `model.qformer_*`, `model.layers.*`, `frm_head`, `vid_head`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    LlamaForCausalLM,
    LlamaModel,
    Phi3ForCausalLM,
    Phi3Model,
    PreTrainedModel,
    Qwen2ForCausalLM,
    Qwen2Model,
)
from transformers import initialization as init
from transformers.conversion_mapping import register_checkpoint_conversion_mapping
from transformers.core_model_loading import WeightRenaming
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask
from transformers.modeling_outputs import CausalLMOutputWithPast

from etchat.constants import IGNORE_INDEX, VIDEO_TOKEN_INDEX
from etchat.model.configuration import ETChatLlamaConfig, ETChatPhi3Config, ETChatQwen2Config
from etchat.model.eva_vit import EVAVisionTransformer
from etchat.model.qformer import QFORMER_WEIGHT_RENAMES, FrameCompressorMixin

logger = logging.getLogger(__name__)

# Hidden-state indices (with the last one taken before the final norm): the second-to-last decoder layer's output
# feeds `vid_head`, the last layer's output at the frame positions feeds `frm_head`.
VID_STATE, FRAME_STATE = -2, -1


class VisionTower(nn.Module):
    """Frozen EVA-ViT-G; `vision_output_layer=-2` builds all but the checkpoint's last block."""

    def __init__(self, geometry: dict, output_layer: int, output_token: str = "patch"):
        super().__init__()
        if output_token != "patch":
            raise ValueError(f"vision_output_token={output_token!r} is not supported; the Q-Former reads patches")
        geometry = dict(geometry)
        geometry["depth"] = geometry["depth"] + output_layer + 1
        self.vision_tower = EVAVisionTransformer(**geometry)
        self.vision_tower.requires_grad_(False)

    @property
    def width(self) -> int:
        return self.vision_tower.pos_embed.shape[-1]

    def forward(self, pixels: torch.Tensor, chunk_size: int = 64) -> torch.Tensor:
        """(N, 3, H, W) -> (N, patches, width) patch features (CLS dropped), `chunk_size` frames at a time."""
        dtype = self.vision_tower.pos_embed.dtype
        chunks = [self.vision_tower(chunk.to(dtype))[:, 1:] for chunk in pixels.split(chunk_size)]
        return torch.cat(chunks)


class MatchingHead(nn.Sequential):
    def __init__(self, hidden_size: int):
        super().__init__(
            nn.LayerNorm(hidden_size),
            nn.Linear(hidden_size, hidden_size // 2),
            nn.GELU(),
            nn.Linear(hidden_size // 2, hidden_size),
        )


@dataclass
class MultimodalInputs:
    """The LLM's inputs once placeholders are expanded into frame tokens (one row per sample)."""

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor  # (B, L) 1 for real tokens
    position_ids: torch.Tensor
    labels: torch.Tensor | None
    block_ids: torch.Tensor  # (B, L) video index at frame positions, -1 elsewhere
    frame_spans: list[list[tuple[int, int]]]  # per sample, [start, end) of each video's frame tokens
    frame_tokens: list[torch.Tensor]  # per sample, (T, hidden) or (turns, T, hidden) frame tokens


@dataclass
class ETChatOutput(CausalLMOutputWithPast):
    lm_loss: torch.Tensor | None = None
    match_loss: torch.Tensor | None = None


def init_etchat_weights(module: nn.Module, std: float) -> None:
    """Initialise the parameters the LLM's own `_init_weights` does not know (used for weights no file provides)."""
    if isinstance(module, EVAVisionTransformer):
        init.trunc_normal_(module.pos_embed, std=std)
        init.trunc_normal_(module.cls_token, std=std)
    elif isinstance(module, ETChatMetaModel):
        init.normal_(module.qformer_query, std=std)
    elif isinstance(module, nn.LayerNorm):
        init.ones_(module.weight)
        init.zeros_(module.bias)


def soft_target_cross_entropy(sim: torch.Tensor, targets: list[float], alpha: float) -> torch.Tensor:
    """Mean over rows of -sum_i w_i log softmax(sim)_i with w_i = alpha^-|i - t| (not normalised, as published).

    `targets` are seconds = frame indices at 1 fps, rounded and clamped to the frames.
    """
    num_frames = sim.size(-1)
    target_idx = torch.tensor(targets, device=sim.device, dtype=torch.float).round().clamp(0, num_frames - 1)
    frame_idx = torch.arange(num_frames, device=sim.device)
    weights = alpha ** -(frame_idx[None] - target_idx[:, None]).abs()
    return F.cross_entropy(sim.float(), weights.float())


class ETChatMetaModel(FrameCompressorMixin):
    """Adds the vision tower and frame compressor to the LLM's decoder model."""

    def _init_weights(self, module):
        super()._init_weights(module)
        init_etchat_weights(module, self.config.initializer_range)

    def __init__(self, config):
        super().__init__(config)
        self.vision_tower = VisionTower(
            config.vision_geometry(), config.vision_output_layer, config.vision_output_token
        )
        self.build_frame_compressor(config, self.vision_tower.width)


class ETChatMetaForCausalLM:
    """Video encoding, input assembly, bidirectional frame attention and `<vid>` matching on top of a causal LM."""

    decoder_class: type  # the LLM's decoder model with ETChatMetaModel mixed in

    def __init__(self, config):
        # PreTrainedModel's init, not the LLM head class's: that one would build a plain decoder we would discard.
        PreTrainedModel.__init__(self, config)
        # Our hidden_states[-1] must be the last layer's output before the final norm (frm_head's input).
        config.tie_last_hidden_states = False
        self.model = self.decoder_class(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.use_matching:
            self.frm_head = MatchingHead(config.hidden_size)
            self.vid_head = MatchingHead(config.hidden_size)
        self.post_init()

    def _init_weights(self, module):
        super()._init_weights(module)
        init_etchat_weights(module, self.config.initializer_range)

    # ---- video -> frame tokens -------------------------------------------------------------------------------
    def encode_videos(
        self,
        videos: list[torch.Tensor],
        queries: list[str | list[str]] | None = None,
        tags: list[list[float] | None] | None = None,
        vision_chunk_size: int = 64,
    ) -> list[torch.Tensor]:
        """Per video (T, 3, H, W) pixels -> (T, hidden) frame tokens, conditioned on its instruction.

        A list of instructions for a video (one per user turn of a multi-turn sample, each turn carrying the video)
        gives (turns, T, hidden): the frames go through the ViT once and through the Q-Former once per turn. The same
        video tensor with the same instruction and tags (a group of stage-4 answers to one prompt) is encoded once.
        """
        queries = queries if queries is not None else [""] * len(videos)
        tags = tags if tags is not None else [None] * len(videos)
        keys = [
            (id(v), q if isinstance(q, str) else tuple(q), tuple(t or ())) for v, q, t in zip(videos, queries, tags)
        ]
        first = {}
        for i, key in enumerate(keys):
            first.setdefault(key, i)
        if len(first) < len(videos):
            unique = list(first.values())
            tokens = self.encode_videos([videos[i] for i in unique], [queries[i] for i in unique],
                                        [tags[i] for i in unique], vision_chunk_size)  # fmt: skip
            by_key = dict(zip(first, tokens))
            return [by_key[key] for key in keys]
        with torch.no_grad():
            # Video by video: concatenating the pixels first would copy every frame once more.
            features = torch.cat([self.model.vision_tower(v.to(self.device), vision_chunk_size) for v in videos])
        frame_rows, instructions, sizes, offset = [], [], [], 0
        for video, query, tag in zip(videos, queries, tags):
            rows = torch.arange(offset, offset + video.size(0), device=features.device)
            offset += video.size(0)
            for text in [query] if isinstance(query, str) else query:
                frame_rows.append(rows)
                sizes.append(video.size(0))
                if self.config.use_time_tag and tag is not None:
                    instructions.extend(f"Current time: {t}s. {text}" for t in tag)
                else:
                    instructions.extend([text] * video.size(0))
        features = features[torch.cat(frame_rows)].to(self.model.qformer_query.dtype)
        tokens = iter(self.model.compress_frames(features, instructions).split(sizes))
        return [next(tokens) if isinstance(q, str) else torch.stack([next(tokens) for _ in q]) for q in queries]

    # ---- frame tokens + text -> LLM inputs ---------------------------------------------------------------------
    def assemble_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        labels: torch.Tensor | None,
        frame_tokens: list[torch.Tensor],
        vid_times: list[list[float] | None],
        padding_side: str = "right",
    ) -> MultimodalInputs:
        """Replace each placeholder by its video's frame tokens and add a frame token to every input `<vid>`."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        rows = []
        for i, (ids, mask, frames, times) in enumerate(zip(input_ids, attention_mask, frame_tokens, vid_times)):
            keep = mask.bool()
            row_labels = labels[i][keep] if labels is not None else None
            rows.append(self._assemble_row(ids[keep], row_labels, frames, times, i))
        return self._pad_rows(rows, frame_tokens, padding_side, with_labels=labels is not None)

    def _assemble_row(self, ids, labels, video_tokens, times, sample_idx):
        # (T, hidden) for one instruction, or (turns, T, hidden): placeholder k takes turn k's tokens.
        turns = video_tokens if video_tokens.dim() == 3 else video_tokens[None]
        embeds = self.get_input_embeddings()(ids.clamp(min=0))
        if self.config.use_matching:
            embeds = self._inject_vid_frames(ids, embeds, turns, times, sample_idx)
        placeholders = (ids == VIDEO_TOKEN_INDEX).nonzero().flatten().tolist()
        pieces, label_pieces, block, spans, start = [], [], [], [], 0
        for video_idx, pos in enumerate(placeholders):
            frames = turns[min(video_idx, turns.size(0) - 1)]
            pieces += [embeds[start:pos], frames]
            block += [ids.new_full((pos - start,), -1), ids.new_full((frames.size(0),), video_idx)]
            if labels is not None:
                label_pieces += [labels[start:pos], labels.new_full((frames.size(0),), IGNORE_INDEX)]
            offset = sum(p.size(0) for p in pieces) - frames.size(0)
            spans.append((offset, offset + frames.size(0)))
            start = pos + 1
        pieces.append(embeds[start:])
        block.append(ids.new_full((ids.size(0) - start,), -1))
        if not placeholders:
            # Keeps the vision path in the graph for text-only samples so every rank computes the same parameters.
            pieces.append(turns[-1][:0])
        if labels is not None:
            label_pieces.append(labels[start:])
        return (
            torch.cat(pieces),
            torch.cat(label_pieces) if labels is not None else None,
            torch.cat(block),
            spans,
        )

    def _inject_vid_frames(self, ids, embeds, turns, times, sample_idx):
        """Add to each input `<vid>` the frame token of its time, taken from the video of the next placeholder (the
        last one for `<vid>` after it), as the published model does."""
        vid_positions = (ids == self.config.match_token_id).nonzero().flatten()
        times = list(times or [])
        if vid_positions.numel() != len(times):
            raise ValueError(
                f"batch row {sample_idx}: {vid_positions.numel()} <vid> tokens in the input but {len(times)} times "
                "in src/tgt"
            )
        if not times:
            return embeds
        placeholders = (ids == VIDEO_TOKEN_INDEX).nonzero().flatten()
        turn_idx = torch.searchsorted(placeholders, vid_positions).clamp(max=turns.size(0) - 1)
        # The published model treats seconds as frame indices (1 fps sampling).
        frame_idx = torch.tensor(times, device=turns.device, dtype=torch.float).round().long()
        frame_idx = frame_idx.clamp(0, turns.size(1) - 1)
        embeds = embeds.clone()
        embeds[vid_positions] = embeds[vid_positions] + turns[turn_idx, frame_idx].to(embeds.dtype)
        return embeds

    def _pad_rows(self, rows, frame_tokens, padding_side, with_labels):
        max_len = max(r[0].size(0) for r in rows)
        embeds, masks, labels, blocks, spans = [], [], [], [], []
        for row_embeds, row_labels, row_block, row_spans in rows:
            pad = max_len - row_embeds.size(0)
            left = pad if padding_side == "left" else 0
            embeds.append(F.pad(row_embeds, (0, 0, left, pad - left)))
            masks.append(F.pad(row_block.new_ones(row_embeds.size(0)), (left, pad - left)))
            blocks.append(F.pad(row_block, (left, pad - left), value=-1))
            if with_labels:
                labels.append(F.pad(row_labels, (left, pad - left), value=IGNORE_INDEX))
            spans.append([(s + left, e + left) for s, e in row_spans])
        attention_mask = torch.stack(masks)
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return MultimodalInputs(
            inputs_embeds=torch.stack(embeds),
            attention_mask=attention_mask,
            position_ids=position_ids,
            labels=torch.stack(labels) if with_labels else None,
            block_ids=torch.stack(blocks),
            frame_spans=spans,
            frame_tokens=frame_tokens,
        )

    def build_attention_mask(self, inputs: MultimodalInputs, cache=None):
        """Causal mask (sliding-window when configured) where each video's frames also see each other."""
        mask_fn = create_sliding_window_causal_mask if self.config.sliding_window else create_causal_mask
        block_ids = inputs.block_ids if self.config.bi_attention else None
        return mask_fn(
            config=self.config,
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            cache=cache,
            position_ids=inputs.position_ids,
            block_sequence_ids=block_ids,
        )

    # ---- forward with the matching loss ------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        images: list[torch.Tensor] | None = None,
        queries: list[str] | None = None,
        src: list[list[float] | None] | None = None,
        tgt: list[list[float] | None] | None = None,
        tags: list[list[float] | None] | None = None,
        **kwargs,
    ):
        if images is None:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        batch = input_ids.size(0)
        src = src if src is not None else [None] * batch
        tgt = tgt if tgt is not None else [None] * batch
        frame_tokens = self.encode_videos(images, queries, tags)
        vid_times = [list(s or []) + list(t or []) for s, t in zip(src, tgt)]
        inputs = self.assemble_inputs(input_ids, attention_mask, labels, frame_tokens, vid_times)
        # Wrappers such as peft pass these as None; the inputs are built here.
        for key in ("use_cache", "inputs_embeds", "position_ids", "output_hidden_states"):
            if kwargs.pop(key, None) is not None and key == "inputs_embeds":
                raise ValueError("pass either images with input_ids, or inputs_embeds, not both")
        outputs = super().forward(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=self.build_attention_mask(inputs),
            position_ids=inputs.position_ids,
            labels=inputs.labels,
            use_cache=False,
            output_hidden_states=[VID_STATE, FRAME_STATE] if self.config.use_matching else False,
            **kwargs,
        )
        lm_loss = outputs.loss
        match_loss = None
        if self.config.use_matching and inputs.labels is not None:
            match_loss = self.matching_loss(outputs.hidden_states, inputs, tgt)
        loss = lm_loss + match_loss if match_loss is not None else lm_loss
        return ETChatOutput(
            loss=loss,
            logits=outputs.logits,
            hidden_states=outputs.hidden_states,
            lm_loss=lm_loss,
            match_loss=match_loss,
        )

    def match_log_probs(
        self, vid_states: list[torch.Tensor], frame_states: list[torch.Tensor], temperature: float = 1.0
    ) -> list[torch.Tensor]:
        """Log-probabilities over the frames of the matching that decoding samples from (docs/design.md §5, §20):
        per sample, the unscaled dot products of `vid_head` of the states that produce its `<vid>` tokens (K, hidden)
        and `frm_head` of its video's frame states (T, hidden), divided by `temperature`; (K, T) each. Each head runs
        once on all samples (under DDP a parameter's gradient must be produced once per backward)."""
        vids = self.vid_head(torch.cat(vid_states)).split([s.size(0) for s in vid_states])
        frames = self.frm_head(torch.cat(frame_states)).split([s.size(0) for s in frame_states])
        return [(v @ f.t()).float().div(temperature).log_softmax(-1) for v, f in zip(vids, frames)]

    def matching_loss(self, hidden_states, inputs: MultimodalInputs, tgt) -> torch.Tensor:
        """Cross-entropy between `<vid>`-frame similarities and the soft target alpha^-|i - t| (docs/design.md §5)."""
        vid_states, frame_states = hidden_states[VID_STATE], hidden_states[FRAME_STATE]
        next_is_vid = inputs.labels[:, 1:] == self.config.match_token_id
        losses = []
        for i, targets in enumerate(tgt):
            if not targets or not inputs.frame_spans[i]:
                continue
            start, end = inputs.frame_spans[i][-1]
            frames = self.frm_head(frame_states[i, start:end])
            positions = next_is_vid[i].nonzero().flatten()[-len(targets) :]
            vids = self.vid_head(vid_states[i, positions])
            sim = vids @ frames.t() / vids.size(-1) ** 0.5
            losses.append(soft_target_cross_entropy(sim, targets, self.config.alpha))
        if losses:
            return torch.stack(losses).mean()
        # No targets in this batch: touch both heads so every rank's gradients cover the same parameters.
        return (self.frm_head(frame_states[:, :1]).sum() + self.vid_head(vid_states[:, :1]).sum()) * 0


class ETChatPhi3Model(ETChatMetaModel, Phi3Model):
    config_class = ETChatPhi3Config


class ETChatPhi3ForCausalLM(ETChatMetaForCausalLM, Phi3ForCausalLM):
    config_class = ETChatPhi3Config
    decoder_class = ETChatPhi3Model


class ETChatQwen2Model(ETChatMetaModel, Qwen2Model):
    config_class = ETChatQwen2Config


class ETChatQwen2ForCausalLM(ETChatMetaForCausalLM, Qwen2ForCausalLM):
    config_class = ETChatQwen2Config
    decoder_class = ETChatQwen2Model


class ETChatLlamaModel(ETChatMetaModel, LlamaModel):
    config_class = ETChatLlamaConfig


class ETChatLlamaForCausalLM(ETChatMetaForCausalLM, LlamaForCausalLM):
    config_class = ETChatLlamaConfig
    decoder_class = ETChatLlamaModel


# language_model name -> (config class, causal LM class), the families E.T. Chat can be built on.
LANGUAGE_MODELS = {
    "phi3": (ETChatPhi3Config, ETChatPhi3ForCausalLM),
    "qwen2": (ETChatQwen2Config, ETChatQwen2ForCausalLM),
    "llama": (ETChatLlamaConfig, ETChatLlamaForCausalLM),
}

for _config_cls, _model_cls in LANGUAGE_MODELS.values():
    AutoConfig.register(_config_cls.model_type, _config_cls, exist_ok=True)
    AutoModelForCausalLM.register(_config_cls, _model_cls, exist_ok=True)
    # Read and write the Q-Former weights under the published (original BERT) names.
    register_checkpoint_conversion_mapping(
        _config_cls.model_type,
        [WeightRenaming(source_patterns=p, target_patterns=t) for p, t in QFORMER_WEIGHT_RENAMES],
        overwrite=True,
    )
