"""Chat templates and label masking, checked against prompts written out by hand and token offsets."""

import random

import pytest
from tokenizers import pre_tokenizers

from etchat.constants import IGNORE_INDEX, VIDEO_PLACEHOLDER, VIDEO_TOKEN_INDEX
from etchat.data.conversation import get_conv, insert_placeholder, preprocess
from etchat.data.tokenization import fill_match_tokens, match_token_offsets, tokenize
from etchat.toy.tokenizer import build_tiny_tokenizer

PHI3_SYSTEM = "<|system|>\nYou are a helpful AI assistant.<|end|>"


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_tiny_tokenizer()
    tok.add_special_tokens({"additional_special_tokens": ["<vid>"]})
    return tok


def human(text):
    return {"from": "human", "value": text}


def gpt(text):
    return {"from": "gpt", "value": text}


def trained_text(out, tokenizer):
    return tokenizer.decode([t for t in out["labels"].tolist() if t != IGNORE_INDEX])


def reply_spans(prompt, answers, opener="<|assistant|>\n", closer="<|end|>"):
    """Character spans of each answer plus the closer that follows it, found in the written-out prompt."""
    spans, pos = [], 0
    for answer in answers:
        start = prompt.index(opener + answer + closer, pos) + len(opener)
        pos = start + len(answer) + len(closer)
        spans.append((start, pos))
    return spans


def expected_ids_and_labels(prompt, spans, tokenizer):
    """Token ids of `prompt` (each chunk around the placeholder tokenized on its own, BOS only first) and the
    labels a token gets when its characters lie inside one of `spans`, from the tokenizer's offset mapping."""
    ids, labels, base = [], [], 0
    for i, chunk in enumerate(prompt.split(VIDEO_PLACEHOLDER)):
        if i > 0:
            ids.append(VIDEO_TOKEN_INDEX)
            labels.append(IGNORE_INDEX)
            base += len(VIDEO_PLACEHOLDER)
        enc = tokenizer(chunk, return_offsets_mapping=True)
        for j, (token_id, (start, end)) in enumerate(zip(enc.input_ids, enc.offset_mapping)):
            if j == 0 and token_id == tokenizer.bos_token_id:
                if i > 0:
                    continue
                start, end = -1, -1  # the BOS has no characters
            ids.append(token_id)
            inside = any(s <= base + start and base + end <= e for s, e in spans) and end > start
            labels.append(token_id if inside else IGNORE_INDEX)
        base += len(chunk)
    return ids, labels


# ---- templates ------------------------------------------------------------------------------------------------


def test_phi3_prompt_single_and_multi_turn():
    conv = get_conv("phi3")
    conv.append_message(conv.roles[0], "Q1")
    conv.append_message(conv.roles[1], "A1")
    conv.append_message(conv.roles[0], "Q2")
    conv.append_message(conv.roles[1], "A2")
    expected = (
        "<|system|>\nYou are a helpful AI assistant.<|end|>\n<|user|>\nQ1<|end|>\n<|assistant|>\nA1<|end|>"
        "\n<|user|>\nQ2<|end|>\n<|assistant|>\nA2<|end|>"
    )
    assert conv.get_prompt() == expected
    assert conv.stop_str == "<|end|>"


def test_phi3_inference_prompt_ends_with_open_assistant_turn():
    conv = get_conv("phi3")
    conv.append_message(conv.roles[0], "<image>\nWhat happens?")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == PHI3_SYSTEM + "\n<|user|>\n<image>\nWhat happens?<|end|>\n<|assistant|>\n"


def test_other_templates():
    conv = get_conv("vicuna_v1")
    conv.append_message(conv.roles[0], "Hi")
    conv.append_message(conv.roles[1], "Hello")
    conv.append_message(conv.roles[0], "Bye")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == conv.system + " USER: Hi ASSISTANT: Hello</s>USER: Bye ASSISTANT:"
    assert conv.stop_str == "</s>"

    conv = get_conv("gemma2")  # no system: the leading newline of the first role is stripped
    conv.append_message(conv.roles[0], "Hi")
    conv.append_message(conv.roles[1], "Yo")
    assert conv.get_prompt() == "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nYo<end_of_turn>"

    conv = get_conv("qwen2")
    conv.append_message(conv.roles[0], "Hi")
    conv.append_message(conv.roles[1], None)
    assert conv.get_prompt() == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\n"
    )

    conv = get_conv("llama3")
    conv.append_message(conv.roles[0], "Hi")
    assert conv.get_prompt() == (
        "<|start_header_id|>system<|end_header_id|>\nYou are a helpful AI assistant<|eot_id|>\n"
        "<|start_header_id|>user<|end_header_id|>\nHi<|eot_id|>"
    )
    assert get_conv("plain").stop_str == "\n"


def test_get_conv_returns_independent_copies():
    first = get_conv("phi3")
    first.append_message(first.roles[0], "only in the first")
    second = get_conv("phi3")
    assert second.messages == []
    copy = first.copy()
    copy.append_message(copy.roles[1], "only in the copy")
    assert len(first.messages) == 1 and len(copy.messages) == 2


def test_unknown_template_and_role_are_errors():
    with pytest.raises(ValueError, match="vicuna_v2"):
        get_conv("vicuna_v2")
    with pytest.raises(ValueError, match="role"):
        get_conv("phi3").append_message("user", "hi")


# ---- label masking --------------------------------------------------------------------------------------------


def test_phi3_single_turn_text_only_masking(tokenizer):
    question, answer = "When does the red circle appear?", "It appears from 12 - 31 seconds."
    out = preprocess([human(question), gpt(answer)], tokenizer, "phi3", has_video=False)

    prompt = PHI3_SYSTEM + f"\n<|user|>\n{question}<|end|>\n<|assistant|>\n{answer}<|end|>"
    ids, labels = expected_ids_and_labels(prompt, reply_spans(prompt, [answer]), tokenizer)
    assert out["input_ids"].tolist() == ids
    assert out["labels"].tolist() == labels
    # The trained tokens are exactly the answer and the closing <|end|>.
    trained = [t for t in out["labels"].tolist() if t != IGNORE_INDEX]
    assert tokenizer.decode(trained) == answer + "<|end|>"


class ScriptedEnds:
    """Stands in for the random generator: answers `randint` with the given ends in turn (0 before, 1 after)."""

    def __init__(self, ends):
        self.ends = iter(ends)

    def randint(self, a, b):
        return next(self.ends)


def test_phi3_multi_turn_video_masking(tokenizer):
    turns = ["Describe the video.", "A blue square moves to the left.", "And then?", "A green triangle appears."]
    conversations = [human("<image>\n" + turns[0]), gpt(turns[1]), human(turns[2]), gpt(turns[3])]
    out = preprocess(conversations, tokenizer, "phi3", has_video=True, rng=ScriptedEnds([1]))

    # The second user turn shows the video too: its placeholder goes after the text (scripted end 1).
    prompt = (
        PHI3_SYSTEM + f"\n<|user|>\n<image>\n{turns[0]}<|end|>\n<|assistant|>\n{turns[1]}<|end|>"
        f"\n<|user|>\n{turns[2]}\n<image><|end|>\n<|assistant|>\n{turns[3]}<|end|>"
    )
    ids, labels = expected_ids_and_labels(prompt, reply_spans(prompt, [turns[1], turns[3]]), tokenizer)
    assert out["input_ids"].tolist() == ids
    assert out["labels"].tolist() == labels
    assert out["input_ids"].tolist().count(VIDEO_TOKEN_INDEX) == 2
    assert VIDEO_TOKEN_INDEX not in out["labels"].tolist()
    assert out["query"] == [turns[0], turns[2]]
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    # Of the five <|end|> tokens, only the two closing the answers are trained.
    assert out["input_ids"].tolist().count(end_id) == 5
    assert out["labels"].tolist().count(end_id) == 2
    assert trained_text(out, tokenizer) == turns[1] + "<|end|>" + turns[3] + "<|end|>"


def test_every_user_turn_gets_the_video_and_its_query(tokenizer):
    questions = ["What is first?", "Where does it go?", "When does it stop?"]
    answers = ["A red dot.", "To the top.", "At the end."]
    conversations = [
        human(questions[0]),
        gpt(answers[0]),
        human("  " + questions[1] + " <image> "),  # a placeholder already there is kept where it is
        gpt(answers[1]),
        human(questions[2]),
        gpt(answers[2]),
    ]
    out = preprocess(conversations, tokenizer, "phi3", has_video=True, rng=ScriptedEnds([0, 1]))

    prompt = (
        PHI3_SYSTEM + f"\n<|user|>\n<image>\n{questions[0]}<|end|>\n<|assistant|>\n{answers[0]}<|end|>"
        f"\n<|user|>\n{questions[1]} <image><|end|>\n<|assistant|>\n{answers[1]}<|end|>"
        f"\n<|user|>\n{questions[2]}\n<image><|end|>\n<|assistant|>\n{answers[2]}<|end|>"
    )
    ids, labels = expected_ids_and_labels(prompt, reply_spans(prompt, answers), tokenizer)
    assert out["input_ids"].tolist() == ids
    assert out["labels"].tolist() == labels
    assert out["input_ids"].tolist().count(VIDEO_TOKEN_INDEX) == 3
    assert out["query"] == questions
    assert trained_text(out, tokenizer) == "".join(a + "<|end|>" for a in answers)


def test_gather_conv_query_shows_the_video_once(tokenizer):
    conversations = [human("What is first?"), gpt("A red dot."), human("Then?"), gpt("It moves.")]
    out = preprocess(conversations, tokenizer, "phi3", True, rng=ScriptedEnds([1]), gather_conv_query=True)
    prompt = (
        PHI3_SYSTEM + "\n<|user|>\nWhat is first?\n<image><|end|>\n<|assistant|>\nA red dot.<|end|>"
        "\n<|user|>\nThen?<|end|>\n<|assistant|>\nIt moves.<|end|>"
    )
    ids, labels = expected_ids_and_labels(prompt, reply_spans(prompt, ["A red dot.", "It moves."]), tokenizer)
    assert out["input_ids"].tolist() == ids and out["labels"].tolist() == labels
    assert out["query"] == "What is first? Then?"

    single = preprocess(conversations[:2], tokenizer, "phi3", True, gather_conv_query=True)
    assert single["query"] == "What is first?"


def test_query_of_single_turn_and_text_only_samples(tokenizer):
    conversations = [human("  What happens?\n<image>"), gpt("A dog jumps.")]
    assert preprocess(conversations, tokenizer, "phi3", has_video=True)["query"] == "What happens?"
    text_only = preprocess([human("Hi"), gpt("Hello"), human("Bye"), gpt("Bye")], tokenizer, "phi3", False)
    assert text_only["query"] == ""
    assert VIDEO_TOKEN_INDEX not in text_only["input_ids"].tolist()


def test_match_tokens_in_the_answer_are_trained(tokenizer):
    answer = "It happens from <vid> to <vid>."
    out = preprocess([human("<image>\nWhen?"), gpt(answer)], tokenizer, "phi3", has_video=True)
    vid_id = tokenizer.convert_tokens_to_ids("<vid>")
    assert out["labels"].tolist().count(vid_id) == 2


def _original_phi3_labels(prompt, tokenizer, strict=True):
    """The original per-round arithmetic (ETBench 445f620, `preprocess_multi_row`), valid for tokenizers that add
    nothing in front of a text; `strict=False` returns its labels where it would only warn of a length mismatch."""
    rounds = [m + "<|end|>" for m in prompt.split("<|end|>")][:-1]
    rounds = ["".join(rounds[:3])] + ["".join(rounds[i : i + 2]) for i in range(3, len(rounds), 2)]
    input_ids = tokenize(prompt, tokenizer)
    labels = input_ids.clone()
    sep, cur = "<|end|>\n<|assistant|>\n", 0
    for i, rou in enumerate(rounds):
        ins = sep.join(rou.split(sep)[:-1]) + sep
        rou_len, ins_len = len(tokenize(rou, tokenizer)), len(tokenize(ins, tokenizer))
        if i > 0:
            rou_len, ins_len = rou_len - 1, ins_len - 1  # the BOS of a round tokenized on its own
        labels[cur : cur + ins_len] = IGNORE_INDEX
        cur += rou_len
    assert cur == len(input_ids) or not strict
    return labels.tolist()


def test_same_mask_as_the_original_arithmetic():
    tok = build_tiny_tokenizer()
    # Phi-3's slow tokenizer with add_prefix_space=False (the original's setting) adds no "▁" to a text on its own.
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    conversations = [
        human("<image>\nDescribe the video."),
        gpt("A blue square."),
        human("Then?\n<image>"),
        gpt("The end."),
    ]
    out = preprocess(conversations, tok, "phi3", has_video=True)
    assert out["labels"].tolist() == _original_phi3_labels(_prompt_of(conversations), tok)


def test_masking_differs_from_the_original_arithmetic_where_the_tokenizer_adds_a_prefix():
    # The tiny tokenizer puts "▁" in front of a text tokenized on its own (Metaspace, prepend_scheme "first"), as
    # sentencepiece tokenizers with a prefix space do. The original counts each later round's tokens by tokenizing
    # the round alone, so it counts that "▁" too: its mask moves one token later with every round (docs/design.md §6).
    tok = build_tiny_tokenizer()
    assert tok.convert_ids_to_tokens(tok("\n<|user|>").input_ids)[:3] == ["<s>", "▁", "\n"]
    replies = ["A blue square.", "The end.", "Nothing more."]
    conversations = [human("<image>\nDescribe the video."), gpt(replies[0]), human("Then?\n<image>"), gpt(replies[1])]
    conversations += [human("<image>\nAnd?"), gpt(replies[2])]
    out = preprocess(conversations, tok, "phi3", has_video=True)
    prompt = _prompt_of(conversations)

    # This project trains every reply and its <|end|>, whole (expected from the tokenizer's offsets).
    _, labels = expected_ids_and_labels(prompt, reply_spans(prompt, replies), tok)
    assert out["labels"].tolist() == labels
    assert trained_text(out, tok) == "".join(reply + "<|end|>" for reply in replies)

    # The original's mask: reply k (from 0) trains the tokens k positions later than the reply's own, so it loses
    # the first k tokens of the reply and trains the k tokens after its <|end|> (none after the last turn).
    original = _original_phi3_labels(prompt, tok, strict=False)
    trained = [i for i, label in enumerate(out["labels"].tolist()) if label != IGNORE_INDEX]
    starts = [i for i in trained if i - 1 not in trained]  # each reply's first token ...
    ends = [i + 1 for i in trained if i + 1 not in trained]  # ... and the token after its <|end|>
    assert len(starts) == len(ends) == 3
    ids = out["input_ids"].tolist()
    shifted = [i + k for k, (start, end) in enumerate(zip(starts, ends)) for i in range(start, end)]
    shifted = [i for i in shifted if i < len(ids)]
    assert [i for i, label in enumerate(original) if label != IGNORE_INDEX] == shifted
    assert original[starts[1]] == original[starts[2]] == original[starts[2] + 1] == IGNORE_INDEX
    assert tok.convert_ids_to_tokens(ids[ends[1]]) == "\n" and original[ends[1]] == ids[ends[1]]


def _prompt_of(conversations):
    conv = get_conv("phi3")
    for i, message in enumerate(conversations):
        conv.append_message(conv.roles[i % 2], message["value"])
    return conv.get_prompt()


def test_plain_trains_the_caption_only(tokenizer):
    caption = "A blue square moves to the left"
    out = preprocess([human("Describe it.\n<image>"), gpt(caption)], tokenizer, "plain", has_video=True)
    expected_ids = tokenize("<image>" + caption + "\n", tokenizer).tolist()
    assert out["input_ids"].tolist() == expected_ids
    assert expected_ids[:2] == [tokenizer.bos_token_id, VIDEO_TOKEN_INDEX]
    assert out["labels"].tolist() == [IGNORE_INDEX, IGNORE_INDEX] + expected_ids[2:]
    assert out["query"] == "Describe it."


def test_missing_placeholder_is_inserted_at_either_end(tokenizer):
    question, answer = "What happens?", "A dog jumps."
    prompts = {
        PHI3_SYSTEM + f"\n<|user|>\n<image>\n{question}<|end|>\n<|assistant|>\n{answer}<|end|>",
        PHI3_SYSTEM + f"\n<|user|>\n{question}\n<image><|end|>\n<|assistant|>\n{answer}<|end|>",
    }
    expected = {tuple(tokenize(p, tokenizer).tolist()) for p in prompts}
    rng = random.Random(0)
    seen = {
        tuple(preprocess([human(question), gpt(answer)], tokenizer, "phi3", True, rng=rng)["input_ids"].tolist())
        for _ in range(20)
    }
    assert seen == expected
    assert {insert_placeholder("q", random.Random(s)) for s in range(20)} == {"<image>\nq", "q\n<image>"}


def test_placeholder_errors_name_the_sample(tokenizer):
    two = [human("<image> and <image>"), gpt("a")]
    with pytest.raises(ValueError, match="sample 7.*2 <image> placeholders"):
        preprocess(two, tokenizer, "phi3", True, name="sample 7")
    two_later = [human("q"), gpt("a"), human("<image> and <image>"), gpt("b")]
    with pytest.raises(ValueError, match="sample 6: message 2 has 2 <image> placeholders"):
        preprocess(two_later, tokenizer, "phi3", True, name="sample 6")
    in_answer = [human("q"), gpt("Look: <image>")]
    with pytest.raises(ValueError, match="sample 5: message 1 is an assistant turn with a <image>"):
        preprocess(in_answer, tokenizer, "phi3", True, name="sample 5")
    later = [human("<image>\nq"), gpt("a"), human("<image>\nq2"), gpt("b")]
    assert preprocess(later, tokenizer, "phi3", True)["query"] == ["q", "q2"]  # fine without gathering
    with pytest.raises(ValueError, match="sample 8: message 2 .*gather_conv_query"):
        preprocess(later, tokenizer, "phi3", True, name="sample 8", gather_conv_query=True)
    with pytest.raises(ValueError, match="sample 9.*no image or video"):
        preprocess([human("<image>\nq"), gpt("a")], tokenizer, "phi3", False, name="sample 9")
    with pytest.raises(ValueError, match="sample 10.*expected 'gpt'"):
        preprocess([human("q"), human("a")], tokenizer, "phi3", False, name="sample 10")


def test_fill_match_tokens_writes_times_in_order():
    assert fill_match_tokens("from <vid> to <vid>.", [3, 7]) == "from 3 to 7."
    assert fill_match_tokens("at <vid>", [1.5], "{:.1f}s") == "at 1.5s"
    with pytest.raises(ValueError, match="2 <vid> tokens but 1 times"):
        fill_match_tokens("<vid> <vid>", [1])


def test_only_real_match_tokens_get_times_when_the_text_spells_vid_out(tokenizer):
    """An untrained model can spell "<vid>" in ordinary tokens: that stays text, the real token gets the time."""
    match_id = tokenizer.convert_tokens_to_ids("<vid>")

    def ids(text):
        return tokenizer(text, add_special_tokens=False).input_ids

    spelled = ids("a <vid") + tokenizer.convert_tokens_to_ids([">"]) + ids(" b")
    assert match_id not in spelled
    token_ids = spelled + [match_id] + ids(" c")
    text = tokenizer.decode(token_ids, skip_special_tokens=False).strip()
    assert text.count("<vid>") == 2

    offsets = match_token_offsets(tokenizer, token_ids, match_id)
    assert offsets == [text.rindex("<vid>")]
    assert fill_match_tokens(text, [12], offsets=offsets) == text[: offsets[0]] + "12" + text[offsets[0] + 5 :]
    assert fill_match_tokens(text, [12], offsets=offsets).startswith("a <vid>")
