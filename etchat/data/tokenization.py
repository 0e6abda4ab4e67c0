"""Text <-> token ids with video placeholders, and `<vid>` times written back into generated text."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from etchat.constants import MATCH_TOKEN, VIDEO_PLACEHOLDER, VIDEO_TOKEN_INDEX


def tokenize(text: str, tokenizer) -> torch.LongTensor:
    """Token ids of `text` where each `<image>` placeholder becomes the sentinel id -200.

    Each piece between placeholders is tokenized on its own; a BOS the tokenizer adds is kept only at the very start.
    """
    input_ids: list[int] = []
    for i, chunk in enumerate(text.split(VIDEO_PLACEHOLDER)):
        chunk_ids = tokenizer(chunk).input_ids
        if chunk_ids and chunk_ids[0] == tokenizer.bos_token_id and tokenizer.bos_token_id is not None:
            chunk_ids = chunk_ids[1:] if i > 0 else chunk_ids
        if i > 0:
            input_ids.append(VIDEO_TOKEN_INDEX)
        input_ids.extend(chunk_ids)
    return torch.tensor(input_ids, dtype=torch.long)


def format_seconds(seconds: float) -> str:
    """mm:ss.s, the way times are shown to people (chat, demo, plots)."""
    minutes, rest = divmod(float(seconds), 60.0)
    return f"{int(minutes):02d}:{rest:04.1f}"


def fill_match_tokens(text: str, times: Sequence, template: str = "{}") -> str:
    """Replace the i-th `<vid>` in `text` by `template.format(times[i])`.

    The published model writes the matched frame index, which equals seconds at 1 fps.
    """
    pieces = text.split(MATCH_TOKEN)
    if len(pieces) - 1 != len(times):
        raise ValueError(f"text has {len(pieces) - 1} {MATCH_TOKEN} tokens but {len(times)} times were given: {text!r}")
    out = [pieces[0]]
    for time, piece in zip(times, pieces[1:]):
        out.append(template.format(time))
        out.append(piece)
    return "".join(out)
