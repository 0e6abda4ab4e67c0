"""A tiny Phi-3-style tokenizer, trained in seconds, for tests and the CPU quickstart.

It mimics what E.T. Chat relies on in Phi-3-mini's tokenizer: a BOS added in front, the chat special tokens
(`<|system|>`, `<|user|>`, `<|assistant|>`, `<|end|>`, `<|endoftext|>`) as single ids, a sentencepiece-like
"▁" word-boundary scheme, and EOS = PAD = `<|endoftext|>`. The real tokenizer is loaded from `model_zoo/`.
"""

from __future__ import annotations

import string

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

PHI3_SPECIAL_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>")
_BASE_SPECIALS = ("<unk>", "<s>", "</s>")

DEFAULT_CORPUS = (
    "You are a helpful AI assistant.",
    "When does the red circle appear in the video? It appears from 12 - 31 seconds.",
    "Describe the video. A blue square moves to the left, then a green triangle appears.",
    "Watch the video carefully and find the moment. The event happens at 4.5 seconds.",
    "Best Option: (A) the dog jumps (B) the cat sleeps (C) a man walks (D) nothing",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 . , ; : ! ? ' \" ( ) - to and the a of in",
)


def build_tiny_tokenizer(
    corpus: list[str] | tuple[str, ...] | None = None, vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """Train a small BPE tokenizer on `corpus` and wrap it the way Phi-3's tokenizer behaves."""
    corpus = list(corpus or DEFAULT_CORPUS)
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first", split=True)
    # Every printable character is in the alphabet so no text ever maps to <unk>.
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_BASE_SPECIALS),
        initial_alphabet=["▁", *string.printable.strip(), " ", "\n"],
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    tokenizer.add_special_tokens(list(PHI3_SPECIAL_TOKENS))
    bos_id = tokenizer.token_to_id("<s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<s>",
        eos_token="<|endoftext|>",
        unk_token="<unk>",
        pad_token="<|endoftext|>",
        padding_side="right",
        model_max_length=2048,
        # Phi-3's tokenizer config says so; left unsaid, transformers 4.x (the published code's) would default to True.
        clean_up_tokenization_spaces=False,
    )
