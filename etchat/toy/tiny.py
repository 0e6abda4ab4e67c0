"""Tiny base weights in the real published formats, for tests and the CPU quickstart.

`write_tiny_base(out_dir)` writes what a user would put in `model_zoo/`, at toy size:

    out_dir/Phi-3-mini-4k-instruct/   a Phi-3 folder (config.json with model_type phi3, model.safetensors,
                                       tokenizer files, generation_config.json)
    out_dir/eva_vit_g.pth              plain EVA-ViT state dict, one block more than E.T. Chat builds
    out_dir/instruct_blip_vicuna7b_trimmed.pth   {'model': {query_tokens, ln_vision.*, Qformer.bert.*}}

and returns the config overrides (`vision_config`, `qformer_config`, `num_query_tokens`) that select the toy
geometry, since the published geometry is the default.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import asdict, dataclass

from etchat.cli import setup_logging
from etchat.io import give_default_modes, write_json_atomic

# torch, transformers and the model are imported where they are used: `--print_args` (run by the quickstart) then
# starts in a fraction of a second instead of the seconds those imports take.

logger = logging.getLogger(__name__)

LLM_FOLDER = "Phi-3-mini-4k-instruct"
VISION_FILE = "eva_vit_g.pth"
QFORMER_FILE = "instruct_blip_vicuna7b_trimmed.pth"


TINY_QFORMER = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, cross_attention_frequency=2
)


@dataclass
class TinyGeometry:
    llm_hidden: int = 64
    llm_layers: int = 2
    llm_heads: int = 4
    llm_intermediate: int = 128
    vision: dict | None = None
    qformer: dict | None = None
    num_query_tokens: int = 8
    tokenizer_vocab: int = 512

    def vision_config(self) -> dict:
        # depth counts the file's blocks; E.T. Chat builds one fewer (vision_output_layer = -2).
        return self.vision or dict(img_size=224, patch_size=32, width=32, depth=3, num_heads=2, mlp_dim=64)

    def qformer_config(self) -> dict:
        return self.qformer or dict(TINY_QFORMER)

    def vision_processor(self) -> str:
        """The frame transform whose output size the tiny vision tower takes."""
        return f"clip_center_{self.vision_config()['img_size']}"


def round_up(n: int, multiple: int) -> int:
    return (n + multiple - 1) // multiple * multiple


def tiny_llm_fields(geometry: TinyGeometry) -> dict:
    """The Phi-3 config fields of the tiny language model (everything but the vocabulary and special tokens)."""
    return dict(
        hidden_size=geometry.llm_hidden,
        intermediate_size=geometry.llm_intermediate,
        num_hidden_layers=geometry.llm_layers,
        num_attention_heads=geometry.llm_heads,
        num_key_value_heads=geometry.llm_heads,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
    )


def write_tiny_llm(folder: str, geometry: TinyGeometry, corpus: list[str] | None, seed: int) -> None:
    import torch
    from transformers import GenerationConfig, Phi3Config, Phi3ForCausalLM

    from etchat.toy.tokenizer import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(corpus, vocab_size=geometry.tokenizer_vocab)
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    # Like Phi-3, the embedding has spare rows so `<vid>` fits without resizing.
    config = Phi3Config(
        vocab_size=round_up(len(tokenizer) + 1, 64),
        **tiny_llm_fields(geometry),
        sliding_window=2047,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Phi3ForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|assistant|>"), end_id],
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    give_default_modes(folder)


def write_tiny_vision(path: str, geometry: TinyGeometry, seed: int) -> None:
    import torch

    from etchat.model.eva_vit import EVAVisionTransformer

    torch.manual_seed(seed + 1)
    torch.save(EVAVisionTransformer(**geometry.vision_config()).state_dict(), path)


def write_tiny_qformer(path: str, geometry: TinyGeometry, vision_width: int, seed: int) -> None:
    import torch

    from etchat.model.qformer import QFormer, hf_to_published_key

    torch.manual_seed(seed + 2)
    qformer = QFormer({**geometry.qformer_config(), "vocab_size": 30523}, vision_width)
    qformer.bert.post_init()
    state = {}
    for key, value in qformer.state_dict().items():
        state[hf_to_published_key("Qformer." + key)] = value
    hidden = geometry.qformer_config()["hidden_size"]
    state["query_tokens"] = torch.randn(1, geometry.num_query_tokens, hidden) * 0.02
    state["ln_vision.weight"] = torch.ones(vision_width)
    state["ln_vision.bias"] = torch.zeros(vision_width)
    torch.save({"model": state}, path)


def write_tiny_base(out_dir: str, geometry: TinyGeometry | None = None, corpus=None, seed: int = 0) -> dict:
    """Write tiny base weights; return the E.T. Chat config overrides and paths (also saved as `tiny.json`)."""
    geometry = geometry or TinyGeometry()
    os.makedirs(out_dir, exist_ok=True)
    llm = os.path.join(out_dir, LLM_FOLDER)
    vision = os.path.join(out_dir, VISION_FILE)
    qformer = os.path.join(out_dir, QFORMER_FILE)
    write_tiny_llm(llm, geometry, corpus, seed)
    write_tiny_vision(vision, geometry, seed)
    write_tiny_qformer(qformer, geometry, geometry.vision_config()["width"], seed)
    spec = {
        "model_name_or_path": llm,
        "pretrain_vision_tower": vision,
        "pretrain_qformer": qformer,
        "vision_config": geometry.vision_config(),
        "qformer_config": geometry.qformer_config(),
        "num_query_tokens": geometry.num_query_tokens,
        "vision_processor": geometry.vision_processor(),
        "geometry": asdict(geometry),
    }
    write_json_atomic(os.path.join(out_dir, "tiny.json"), spec, indent=2)
    return spec


PRESETS = {
    "test": TinyGeometry(),
    # A little more room for the quickstart's model to learn grounding in minutes. No Q-Former dropout: on a CPU,
    # attention dropout sends sdpa down its slow math path, which alone cost a third of a training step. Frames of
    # 112 px (patches of 16, the same 7 x 7 grid over the frame as 32 px patches of 224 px frames): a quarter of the
    # pixels to move from the data loaders and through the vision tower.
    "quickstart": TinyGeometry(
        vision=dict(img_size=112, patch_size=16, width=32, depth=3, num_heads=2, mlp_dim=64),
        llm_hidden=128,
        llm_layers=4,
        llm_heads=4,
        llm_intermediate=256,
        tokenizer_vocab=400,
        qformer={**TINY_QFORMER, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
    ),
}
NEW_AT_STAGE_1 = ("qformer_proj", "qformer_q_proj", "qformer_k_proj", "qformer_v_proj", "frm_head", "vid_head")


def training_args(spec: dict) -> list[str]:
    """The train.py flags that select this tiny geometry (JSON without spaces, so shells can pass it unquoted)."""
    return [
        "--vision_processor",
        spec.get("vision_processor", "clip_center_224"),
        "--vision_config",
        json.dumps(spec["vision_config"], separators=(",", ":")),
        "--qformer_config",
        json.dumps(spec["qformer_config"], separators=(",", ":")),
        "--num_query_tokens",
        str(spec["num_query_tokens"]),
    ]


def build_untrained(spec: dict, **overrides):
    """E.T. Chat assembled from tiny base weights with fresh projector and heads, as stage 1 starts from the
    published weights; `<vid>` added. Returns (model in eval mode, tokenizer)."""
    from etchat.model.loading import add_match_token, load_etchat

    fields = ("pretrain_vision_tower", "pretrain_qformer", "vision_config", "qformer_config", "num_query_tokens")
    kwargs = {k: spec[k] for k in fields}
    kwargs["vision_processor"] = spec.get("vision_processor", "clip_center_224")
    kwargs.update(use_matching=True, bi_attention=True, **overrides)
    model, tokenizer = load_etchat(
        spec["model_name_or_path"], language_model="phi3", new_modules=NEW_AT_STAGE_1, **kwargs
    )
    add_match_token(model, tokenizer)
    return model.eval(), tokenizer


def save_untrained(spec: dict, out_dir: str, seed: int = 0) -> None:
    """The untrained baseline of the quickstart, saved as a full checkpoint."""
    import torch

    from etchat.model.loading import save_etchat

    torch.manual_seed(seed)
    save_etchat(*build_untrained(spec), out_dir)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.toy.tiny",
        description="Write tiny E.T. Chat base weights in the published formats (for tests and the quickstart).",
    )
    parser.add_argument("out_dir", help="folder for the base weights (or an existing one, with the options below)")
    parser.add_argument(
        "--corpus", help="texts to train the tiny tokenizer on: a JSON list, or a synthetic data set folder"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="test", help="toy geometry")
    parser.add_argument("--print_args", action="store_true", help="print the train.py flags of an existing base")
    parser.add_argument("--save_untrained", metavar="DIR", help="save an untrained E.T. Chat built from the base")
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    setup_logging()
    if args.print_args or args.save_untrained:
        with open(os.path.join(args.out_dir, "tiny.json")) as f:
            spec = json.load(f)
        if args.print_args:
            print(" ".join(training_args(spec)))
        if args.save_untrained:
            save_untrained(spec, args.save_untrained)
        return
    corpus = None
    if args.corpus and os.path.isdir(args.corpus):
        from etchat.toy.synthetic.dataset import corpus_texts

        corpus = corpus_texts(args.corpus)
    elif args.corpus:
        with open(args.corpus) as f:
            corpus = json.load(f)
    write_tiny_base(args.out_dir, PRESETS[args.preset], corpus, args.seed)
    logger.info("tiny base written to %s", args.out_dir)


if __name__ == "__main__":
    main()
