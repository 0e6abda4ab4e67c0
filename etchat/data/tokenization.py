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


def match_positions(text: str) -> list[int]:
    """Character offset of every "<vid>" in `text`."""
    positions, start = [], text.find(MATCH_TOKEN)
    while start != -1:
        positions.append(start)
        start = text.find(MATCH_TOKEN, start + len(MATCH_TOKEN))
    return positions


def fill_match_tokens(text: str, times: Sequence, template: str = "{}", offsets: Sequence[int] | None = None) -> str:
    """Replace the i-th `<vid>` in `text` by `template.format(times[i])`.

    The published model writes the matched frame index, which equals seconds at 1 fps. `offsets` (from
    `match_token_offsets`) say where the real `<vid>` tokens are when the text also spells "<vid>" out in plain
    characters, as an untrained model may.
    """
    if offsets is None:
        offsets = match_positions(text)
        if len(offsets) != len(times):
            raise ValueError(
                f"text has {len(offsets)} {MATCH_TOKEN} tokens but {len(times)} times were given: {text!r}"
            )
    if len(offsets) != len(times) or any(text[o : o + len(MATCH_TOKEN)] != MATCH_TOKEN for o in offsets):
        raise ValueError(f"{len(times)} times do not fit the {MATCH_TOKEN} tokens at {list(offsets)} of {text!r}")
    out, end = [], 0
    for time, offset in zip(times, offsets):
        out += [text[end:offset], template.format(time)]
        end = offset + len(MATCH_TOKEN)
    return "".join(out) + text[end:]


def match_token_offsets(
    tokenizer, token_ids: Sequence[int], match_id: int | None, decoded: str | None = None
) -> list[int]:
    """Character offset of each `<vid>` token in the decoded text with leading white space stripped.

    Usually every "<vid>" of the text is a token. A model may also spell it out in ordinary tokens; then each real
    one is found by decoding the prefix that ends with it. `decoded`: the caller's decoding of all of `token_ids`.
    """
    ids = list(token_ids)
    full = tokenizer.decode(ids, skip_special_tokens=False) if decoded is None else decoded
    text = full.lstrip()
    positions = match_positions(text)
    if len(positions) == ids.count(match_id):
        return positions
    shift = len(full) - len(text)
    ends = [len(tokenizer.decode(ids[: i + 1], skip_special_tokens=False)) for i, t in enumerate(ids) if t == match_id]
    return [end - len(MATCH_TOKEN) - shift for end in ends]
