"""Chat templates, and turning a LLaVA-style conversation into token ids with the training label mask
(docs/design.md §4).

Templates follow the original E.T. Chat code: ``plain`` (stage 1 captioning), ``phi3`` (the released model),
``vicuna_v1``, ``llama3``, ``gemma2`` and ``qwen2``. A prompt is ``system + seps[0]``, then for every message
``role + text + sep`` (``sep`` alternates between ``seps[0]`` and ``seps[1]`` and is not repeated when the text already
ends with it), with leading newlines stripped. An open turn (text ``None``) is just its role, ready for generation.

Label mask: only the assistant replies and the separator closing each of them (``<|end|>`` for phi3) are trained;
``plain`` trains the caption and its trailing newline. Everything else is ``IGNORE_INDEX``.

Video: as in the published training, every user turn of a video/image sample carries the placeholder, and the video
is compressed once per turn with that turn's text as the Q-Former instruction (``gather_conv_query`` instead shows
it once, in the first turn, with all user texts joined).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field, replace

import torch

from etchat.constants import IGNORE_INDEX, VIDEO_PLACEHOLDER, VIDEO_TOKEN_INDEX
from etchat.data.tokenization import tokenize

logger = logging.getLogger(__name__)

HUMAN, GPT = "human", "gpt"


@dataclass
class Conversation:
    name: str
    system: str | None
    roles: tuple[str, str]  # (user, assistant) prefixes, written before each message
    seps: tuple[str, str]  # written after user / assistant messages
    role_sep: str = ""  # between a role and its message (vicuna: ": ")
    open_role_suffix: str = ""  # after the role of an open turn (vicuna: ":")
    messages: list[list] = field(default_factory=list)

    @property
    def stop_str(self) -> str:
        """The string that ends an assistant reply; generation stops there."""
        return self.seps[1]

    def append_message(self, role: str, text: str | None) -> None:
        if role not in self.roles:
            raise ValueError(f"Unknown role {role!r} for template {self.name!r}, expected one of {self.roles}")
        self.messages.append([role, text])

    def clear(self) -> None:
        self.messages = []

    def copy(self) -> Conversation:
        return replace(self, messages=[list(m) for m in self.messages])

    def get_prompt(self) -> str:
        return self.render()[0]

    def render(self) -> tuple[str, list[tuple[int, int]]]:
        """The prompt and the character span of each assistant reply including its closing separator."""
        prompt = self.system + self.seps[0] if self.system is not None else ""
        reply_spans = []
        for i, (role, text) in enumerate(self.messages):
            sep = self.seps[i % 2]
            if text is None:
                prompt += role + self.open_role_suffix
                continue
            prompt += role + self.role_sep
            start = len(prompt)
            prompt += text
            if not prompt.endswith(sep):
                prompt += sep
            if role == self.roles[1]:
                reply_spans.append((start, len(prompt)))
        # Templates whose roles start with a newline would otherwise begin with one when there is no system text.
        stripped = prompt.lstrip("\n")
        shift = len(prompt) - len(stripped)
        return stripped, [(start - shift, end - shift) for start, end in reply_spans]


_TEMPLATES = {
    "plain": dict(system=None, roles=("", ""), seps=("", "\n")),
    "vicuna_v1": dict(
        system="A chat between a curious user and an artificial intelligence assistant. "
        "The assistant gives helpful, detailed, and polite answers to the user's questions.",
        roles=("USER", "ASSISTANT"),
        seps=(" ", "</s>"),
        role_sep=": ",
        open_role_suffix=":",
    ),
    "phi3": dict(
        system="<|system|>\nYou are a helpful AI assistant.",
        roles=("\n<|user|>\n", "\n<|assistant|>\n"),
        seps=("<|end|>", "<|end|>"),
    ),
    "llama3": dict(
        system="<|start_header_id|>system<|end_header_id|>\nYou are a helpful AI assistant",
        roles=("\n<|start_header_id|>user<|end_header_id|>\n", "\n<|start_header_id|>assistant<|end_header_id|>\n"),
        seps=("<|eot_id|>", "<|eot_id|>"),
    ),
    "gemma2": dict(
        system=None,
        roles=("\n<start_of_turn>user\n", "\n<start_of_turn>model\n"),
        seps=("<end_of_turn>", "<end_of_turn>"),
    ),
    "qwen2": dict(
        system="<|im_start|>system\nYou are a helpful assistant.",
        roles=("\n<|im_start|>user\n", "\n<|im_start|>assistant\n"),
        seps=("<|im_end|>", "<|im_end|>"),
    ),
}
CONV_TYPES = tuple(_TEMPLATES)


def get_conv(name: str) -> Conversation:
    """A new, empty conversation of template ``name``."""
    if name not in _TEMPLATES:
        raise ValueError(f"Unknown conversation template {name!r}, expected one of {CONV_TYPES}")
    return Conversation(name=name, messages=[], **_TEMPLATES[name])


def chat_prompt(history: list[tuple[str, str]], question: str, conv_name: str = "phi3") -> str:
    """The inference prompt of ``question`` after the (question, answer) ``history``, with an open assistant turn;
    the video placeholder goes at the start of the first user turn (``<image>\\n{question}``)."""
    conv = get_conv(conv_name)
    for k, (user, reply) in enumerate([*history, (question, None)]):
        conv.append_message(conv.roles[0], VIDEO_PLACEHOLDER + "\n" + user if k == 0 else user)
        conv.append_message(conv.roles[1], reply)
    return conv.get_prompt()


def insert_placeholder(text: str, rng: random.Random | None = None) -> str:
    """Put the video placeholder at a random end of ``text`` (``<image>\\n`` before or ``\\n<image>`` after)."""
    if (rng or random).randint(0, 1) == 0:
        return VIDEO_PLACEHOLDER + "\n" + text
    return text + "\n" + VIDEO_PLACEHOLDER


def question_text(text: str) -> str:
    """A user turn as the Q-Former reads it: without the placeholder, stripped."""
    return text.replace(VIDEO_PLACEHOLDER, "").strip()


def check_conversation(
    conversations: list[dict], has_video: bool, name: str = "sample", gather_conv_query: bool = False
) -> None:
    """Raise a ValueError naming ``name`` when roles do not alternate or placeholders are misplaced.

    A user turn may hold at most one placeholder, an assistant turn and a text-only sample none. With
    ``gather_conv_query`` the video is shown once, so only the first user turn may hold one.
    """
    if not isinstance(conversations, list) or not conversations:
        raise ValueError(f"{name}: 'conversations' must be a non-empty list, got {conversations!r}")
    for i, message in enumerate(conversations):
        if not isinstance(message, dict) or not isinstance(message.get("value"), str):
            raise ValueError(f"{name}: message {i} must be a dict with a string 'value', got {message!r}")
        expected = HUMAN if i % 2 == 0 else GPT
        if message.get("from") != expected:
            raise ValueError(f"{name}: message {i} is from {message.get('from')!r}, expected {expected!r}")
        count = message["value"].count(VIDEO_PLACEHOLDER)
        if count == 0:
            continue
        if count > 1:
            raise ValueError(f"{name}: message {i} has {count} {VIDEO_PLACEHOLDER} placeholders, at most 1 is allowed")
        if not has_video:
            raise ValueError(f"{name}: message {i} has a {VIDEO_PLACEHOLDER} placeholder but no image or video")
        if expected == GPT:
            raise ValueError(f"{name}: message {i} is an assistant turn with a {VIDEO_PLACEHOLDER} placeholder")
        if gather_conv_query and i > 0:
            raise ValueError(
                f"{name}: message {i} has a {VIDEO_PLACEHOLDER} placeholder, with gather_conv_query only the first "
                "user turn may have one"
            )


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def mask_outside_spans(prompt: str, spans: list[tuple[int, int]], tokenizer) -> dict[str, torch.Tensor]:
    """Tokenize ``prompt`` and keep labels only on the tokens of the character ``spans``.

    A span boundary is mapped to a token position by tokenizing the prompt up to it and matching that against the
    whole prompt's ids (the longest common prefix), so a token that straddles the boundary belongs to the reply.
    This is what the original computes from per-round token counts, without its off-by-one risk for tokenizers
    that add a prefix space to a round tokenized on its own.
    """
    input_ids = tokenize(prompt, tokenizer)
    ids = input_ids.tolist()
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    for start, end in spans:
        first = _common_prefix_len(tokenize(prompt[:start], tokenizer).tolist(), ids)
        last = _common_prefix_len(tokenize(prompt[:end], tokenizer).tolist(), ids)
        if last <= first:
            logger.warning("Reply %r maps to no tokens, it is not trained", prompt[start:end][:50])
        labels[first:last] = input_ids[first:last]
    labels[labels == VIDEO_TOKEN_INDEX] = IGNORE_INDEX
    return dict(input_ids=input_ids, labels=labels)


def _preprocess_plain(conversations: list[dict], tokenizer, has_video: bool, name: str) -> dict:
    if len(conversations) != 2 or not conversations[1]["value"]:
        raise ValueError(f"{name}: the 'plain' template needs one question and one non-empty caption")
    # The question only feeds the Q-Former; the language model sees the video and the caption.
    prefix = VIDEO_PLACEHOLDER if has_video else ""
    prompt = prefix + conversations[1]["value"] + "\n"
    data = mask_outside_spans(prompt, [(len(prefix), len(prompt))], tokenizer)
    data["query"] = question_text(conversations[0]["value"]) if has_video else ""
    return data


def _video_query(questions: list[str], has_video: bool, gather_conv_query: bool) -> str | list[str]:
    # One instruction per placeholder: a str for one placeholder, else a list in placeholder order.
    if not has_video:
        return ""
    if gather_conv_query:
        return " ".join(questions)
    return questions[0] if len(questions) == 1 else questions


def preprocess(
    conversations: list[dict],
    tokenizer,
    template: str,
    has_video: bool,
    name: str = "sample",
    rng: random.Random | None = None,
    gather_conv_query: bool = False,
) -> dict:
    """``input_ids`` (-200 per placeholder), ``labels`` (-100 outside the trained replies) and ``query``.

    ``conversations`` alternate ``{"from": "human"|"gpt", "value": text}``. In a video/image sample every user turn
    shows the video: a turn without the placeholder gets one at a random end, and ``query`` holds each user turn's
    text (placeholder removed) for the Q-Former, in placeholder order: a str for a single turn, else a list. With
    ``gather_conv_query`` only the first user turn gets the placeholder and ``query`` is all user texts joined by a
    space. Text-only samples have ``query == ""``. ``plain`` (stage 1) keeps one placeholder and the first turn's
    text. ``name`` identifies the sample in error messages.
    """
    check_conversation(conversations, has_video, name, gather_conv_query)
    if template == "plain":
        return _preprocess_plain(conversations, tokenizer, has_video, name)

    conv = get_conv(template)
    questions = []
    for i, message in enumerate(conversations):
        text = message["value"].strip()
        if not text:
            raise ValueError(f"{name}: message {i} is empty")
        if i % 2 == 0:
            questions.append(question_text(text))
            shows_video = has_video and (i == 0 or not gather_conv_query)
            if shows_video and VIDEO_PLACEHOLDER not in text:
                text = insert_placeholder(text, rng)
        conv.append_message(conv.roles[i % 2], text)
    prompt, spans = conv.render()
    data = mask_outside_spans(prompt, spans, tokenizer)
    data["query"] = _video_query(questions, has_video, gather_conv_query)
    return data
