"""E.T. Chat model: geometry, forward, matching loss, bidirectional frames, `<vid>` inputs, generation."""

import math
from pathlib import Path

import pytest
import torch

from etchat.constants import IGNORE_INDEX
from etchat.data.tokenization import tokenize
from etchat.model.configuration import ETChatPhi3Config
from etchat.model.generation import (
    GenerationRequest,
    GenerationSettings,
    MatchAwareRepetitionPenalty,
    generate,
)
from etchat.model.modeling_etchat import ETChatPhi3ForCausalLM, soft_target_cross_entropy
from etchat.model.qformer import build_qformer_tokenizer, hf_to_published_key, published_to_hf_key
from tests.conftest import build_tiny_etchat

KEYS = Path(__file__).parents[1] / "etchat" / "model" / "keys"
PROMPT = "<|user|>\n<image>\n{q}<|end|>\n<|assistant|>\n"


def read_keys(name):
    rows = [line.split("\t") for line in (KEYS / name).read_text().splitlines() if line.strip()]
    return {key: tuple(int(x) for x in shape.strip("()").split(",") if x.strip()) for key, shape in rows}


@pytest.fixture(scope="module")
def tiny(tiny_base):
    return build_tiny_etchat(tiny_base)


def video(num_frames, seed):
    return torch.randn(num_frames, 3, 224, 224, generator=torch.Generator().manual_seed(seed))


def sample_ids(tokenizer, question="When does it happen?", answer=None):
    text = PROMPT.format(q=question) + (answer + "<|end|>" if answer else "")
    return tokenize(text, tokenizer)


# ---- geometry of the published model ------------------------------------------------------------------------------


def test_full_geometry_matches_published_checkpoint_names_and_shapes():
    config = ETChatPhi3Config(sliding_window=2048, match_token_id=32011)
    with torch.device("meta"):
        model = ETChatPhi3ForCausalLM(config)
    ours = {hf_to_published_key(k): tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == read_keys("etchat_phi3_full.tsv")


def test_base_pth_files_cover_every_vision_and_qformer_weight():
    with torch.device("meta"):
        model = ETChatPhi3ForCausalLM(ETChatPhi3Config())
    state = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    vision = {
        "model.vision_tower.vision_tower." + k: s
        for k, s in read_keys("eva_vit_g_pth.tsv").items()
        if not k.startswith("blocks.39.")
    }
    qformer = {}
    for key, shape in read_keys("instruct_blip_vicuna7b_trimmed_pth.tsv").items():
        if key.startswith("Qformer.bert."):
            qformer[published_to_hf_key("model.qformer_bert." + key[len("Qformer.") :])] = shape
        elif key.startswith("ln_vision."):
            qformer["model.qformer_ln." + key[len("ln_vision.") :]] = shape
        elif key == "query_tokens":
            qformer["model.qformer_query"] = shape
    for name, shape in {**vision, **qformer}.items():
        assert state[name] == shape, name
    needed = {k for k in state if k.startswith(("model.vision_tower.", "model.qformer_bert.", "model.qformer_ln"))}
    assert needed <= set(vision) | set(qformer)


def test_qformer_key_renames_round_trip():
    for key in read_keys("etchat_phi3_full.tsv"):
        assert hf_to_published_key(published_to_hf_key(key)) == key
    assert published_to_hf_key("model.qformer_bert.bert.encoder.layer.2.crossattention.self.key.weight") == (
        "model.qformer_bert.bert.encoder.layer.2.crossattention.attention.key.weight"
    )


def test_qformer_tokenizer_is_bert_base_uncased_with_dec_bos():
    tokenizer = build_qformer_tokenizer()
    assert len(tokenizer) == 30523
    assert tokenizer.bos_token == "[DEC]" and tokenizer.bos_token_id == 30522
    ids = tokenizer("Hello World", add_special_tokens=True).input_ids
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "hello", "world", "[SEP]"]
    long = tokenizer(" ".join(["word"] * 300) + " end", truncation=True, max_length=256).input_ids
    assert len(long) == 256 and tokenizer.convert_ids_to_tokens(long)[-2] == "end"  # truncated on the left


# ---- forward and loss -----------------------------------------------------------------------------------------------


def test_soft_target_cross_entropy_hand_computed():
    sim = torch.tensor([[0.0, math.log(2.0)]])
    # alpha 2, target frame 0: weights (1, 1/2); softmax (1/3, 2/3)
    expected = -(1.0 * math.log(1 / 3) + 0.5 * math.log(2 / 3))
    assert soft_target_cross_entropy(sim, [0], 2.0).item() == pytest.approx(expected, rel=1e-6)
    # a target beyond the frames is clamped to the last one; 1.4 s rounds to frame 1
    assert soft_target_cross_entropy(sim, [7.0], 2.0).item() == pytest.approx(
        soft_target_cross_entropy(sim, [1.4], 2.0).item()
    )


def batch_with_targets(tokenizer):
    ids_a = sample_ids(tokenizer, "When is <vid>?", "From <vid> to <vid>.")
    ids_b = sample_ids(tokenizer, "Describe the video.", "A red circle.")
    pad = tokenizer.pad_token_id
    input_ids = torch.nn.utils.rnn.pad_sequence([ids_a, ids_b], batch_first=True, padding_value=pad)
    attention_mask = torch.zeros_like(input_ids)
    attention_mask[0, : ids_a.numel()] = 1
    attention_mask[1, : ids_b.numel()] = 1
    labels = input_ids.clone()
    answer_start = [len(tokenize(PROMPT.format(q=q), tokenizer)) for q in ("When is <vid>?", "Describe the video.")]
    for row, start in enumerate(answer_start):
        labels[row, :start] = IGNORE_INDEX
    labels[attention_mask == 0] = IGNORE_INDEX
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        labels=labels,
        images=[video(6, 0), video(4, 1)],
        queries=["When is it?", "Describe the video."],
        src=[[1.0], None],
        tgt=[[2.0, 4.6], None],
    )


def test_matching_loss_equals_hand_computation_from_hidden_states(tiny):
    model, tokenizer = tiny
    batch = batch_with_targets(tokenizer)
    captured = {}
    last_layer = model.model.layers[-1]

    def keep_input(module, args, kwargs):
        captured["vid"] = args[0] if args else kwargs["hidden_states"]

    def keep_output(module, args, output):
        captured["frm"] = output[0] if isinstance(output, tuple) else output

    pre = last_layer.register_forward_pre_hook(keep_input, with_kwargs=True)
    post = last_layer.register_forward_hook(keep_output)
    try:
        out = model(**batch)
    finally:
        pre.remove()
        post.remove()
    # hidden_states[-2] is the last layer's input and [-1] its output before the final norm.
    assert torch.equal(out.hidden_states[-2], captured["vid"])
    assert torch.equal(out.hidden_states[-1], captured["frm"])

    # Sample 0: the prompt's placeholder is at index p; frames occupy [p, p + 6) after expansion.
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()]
    p = int((ids == -200).nonzero())
    frames = model.frm_head(captured["frm"][0, p : p + 6])
    labels = batch["labels"][0][batch["attention_mask"][0].bool()]
    expanded_labels = torch.cat([labels[:p], torch.full((6,), IGNORE_INDEX), labels[p + 1 :]])
    vid_pos = [i for i in range(len(expanded_labels) - 1) if expanded_labels[i + 1] == model.config.match_token_id]
    assert len(vid_pos) == 2
    vids = model.vid_head(captured["vid"][0, vid_pos])
    sim = vids @ frames.T / math.sqrt(model.config.hidden_size)
    logp = sim.log_softmax(-1)
    loss = 0.0
    for row, target in enumerate([2, 5]):  # 4.6 s -> frame 5
        weights = torch.tensor([2.0 ** -abs(i - target) for i in range(6)])
        loss = loss - (weights * logp[row]).sum()
    assert out.match_loss.item() == pytest.approx((loss / 2).item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(out.lm_loss.item() + out.match_loss.item(), rel=1e-6)


def test_backward_reaches_every_trainable_group(tiny):
    model, tokenizer = tiny
    model.train()
    try:
        model.zero_grad()
        model(**batch_with_targets(tokenizer)).loss.backward()
        groups = [
            "model.layers.",
            "model.embed_tokens",
            "lm_head",
            "frm_head",
            "vid_head",
            "model.qformer_bert.",
            "model.qformer_query",
            "model.qformer_ln",
            "model.qformer_proj",
            "model.qformer_q_proj",
            "model.qformer_k_proj",
            "model.qformer_v_proj",
        ]
        for group in groups:
            grads = [p.grad for n, p in model.named_parameters() if n.startswith(group)]
            assert grads and all(g is not None for g in grads), group
            assert any(g.abs().sum() > 0 for g in grads), group
        assert all(not p.requires_grad for p in model.model.vision_tower.parameters())
    finally:
        model.zero_grad()
        model.eval()


def test_text_only_batch_without_targets_still_touches_heads(tiny):
    model, tokenizer = tiny
    ids = tokenize("<|user|>\nHi<|end|>\n<|assistant|>\nHello<|end|>", tokenizer)[None]
    model.train()
    try:
        model.zero_grad()
        out = model(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            labels=ids.clone(),
            images=[torch.zeros(1, 3, 224, 224)],
            queries=[""],
        )
        assert out.match_loss.item() == 0.0
        out.loss.backward()
        assert model.frm_head[1].weight.grad is not None and model.vid_head[1].weight.grad is not None
        assert model.model.qformer_v_proj[1].weight.grad is not None
    finally:
        model.zero_grad()
        model.eval()


def hidden_at_frames(model, tokenizer, frames, bi_attention):
    model.config.bi_attention = bi_attention
    try:
        ids = sample_ids(tokenizer)[None]
        tokens = model.encode_videos([frames], ["q"])
        inputs = model.assemble_inputs(ids, None, None, tokens, [[]])
        with torch.no_grad():
            out = model(
                inputs_embeds=inputs.inputs_embeds,
                attention_mask=model.build_attention_mask(inputs),
                position_ids=inputs.position_ids,
                output_hidden_states=True,
            )
        start, end = inputs.frame_spans[0][0]
        return out.hidden_states[-1][0], start, end
    finally:
        model.config.bi_attention = True


@pytest.mark.parametrize("bi_attention", [True, False])
def test_frame_tokens_see_later_frames_only_with_bi_attention(tiny, bi_attention):
    model, tokenizer = tiny
    frames = video(5, 3)
    changed = frames.clone()
    changed[-1] = torch.randn(3, 224, 224)
    h1, start, end = hidden_at_frames(model, tokenizer, frames, bi_attention)
    h2, _, _ = hidden_at_frames(model, tokenizer, changed, bi_attention)
    assert torch.allclose(h1[:start], h2[:start])  # text before the video never sees it
    earlier_frames_changed = not torch.allclose(h1[start : end - 1], h2[start : end - 1], atol=1e-6)
    assert earlier_frames_changed == bi_attention


def test_vid_input_embedding_adds_the_frame_token_of_src(tiny):
    model, tokenizer = tiny
    ids = sample_ids(tokenizer, "What happens at <vid> and <vid>?")
    frames = video(4, 5)
    tokens = model.encode_videos([frames], ["q"])
    inputs = model.assemble_inputs(ids[None], None, None, tokens, [[2.4, 9.0]])
    p = int((ids == -200).nonzero())
    vid_positions = [i for i, t in enumerate(ids.tolist()) if t == model.config.match_token_id]
    word = model.get_input_embeddings().weight[model.config.match_token_id]
    for pos, frame in zip(vid_positions, [2, 3]):  # 2.4 -> frame 2; 9.0 clamped to the last frame
        expanded = pos + 4 - 1 if pos > p else pos
        assert torch.allclose(inputs.inputs_embeds[0, expanded], word + tokens[0][frame], atol=1e-6)
    with pytest.raises(ValueError, match="2 <vid> tokens"):
        model.assemble_inputs(ids[None], None, None, tokens, [[1.0]])


def test_time_tag_variant_conditions_each_frame_on_its_time(tiny):
    model, _ = tiny
    frames = video(3, 7)
    plain = model.encode_videos([frames], ["q"], [[0.0, 1.0, 2.0]])[0]
    model.config.use_time_tag = True
    try:
        tagged = model.encode_videos([frames], ["q"], [[0.0, 1.0, 2.0]])[0]
        retagged = model.encode_videos([frames], ["q"], [[5.0, 1.0, 2.0]])[0]
    finally:
        model.config.use_time_tag = False
    assert tagged.shape == plain.shape == (3, model.config.hidden_size)
    assert not torch.allclose(tagged, plain)
    assert not torch.allclose(retagged[0], tagged[0]) and torch.allclose(retagged[1:], tagged[1:], atol=1e-6)


# ---- generation ----------------------------------------------------------------------------------------------------


def test_repetition_penalty_spares_vid():
    penalty = MatchAwareRepetitionPenalty(2.0, match_token_id=3)
    scores = torch.tensor([[1.0, -1.0, 4.0, 4.0]])
    seen = torch.tensor([[True, True, False, True]])
    assert penalty(seen, scores).tolist() == [[0.5, -2.0, 4.0, 4.0]]


@pytest.fixture()
def vid_prone(tiny):
    """The tiny model with `<vid>` made likely, so answers exercise matching: `<vid>`'s output row becomes a
    scaled copy of the row of the token the untrained model prefers first."""
    model, tokenizer = tiny
    head = model.lm_head.weight
    saved = head[model.config.match_token_id].clone()
    settings = GenerationSettings(max_new_tokens=1, do_sample=False)
    favourite = generate(model, tokenizer, requests_for(tokenizer, [4]), settings)[0].token_ids[0]
    with torch.no_grad():
        head[model.config.match_token_id] = 3 * head[favourite]
    yield model, tokenizer
    with torch.no_grad():
        head[model.config.match_token_id] = saved


def requests_for(tokenizer, lengths):
    return [
        GenerationRequest(
            input_ids=sample_ids(tokenizer, f"Question {i} at <vid>"),
            video=video(n, 10 + i),
            query=f"Question {i}",
            src=[1.0],
            tags=[float(2 * t) for t in range(n)],
        )
        for i, n in enumerate(lengths)
    ]


def test_batched_greedy_generation_equals_batch_of_one(vid_prone):
    model, tokenizer = vid_prone
    settings = GenerationSettings(max_new_tokens=10, do_sample=False)
    requests = requests_for(tokenizer, [5, 9, 3])
    batched = generate(model, tokenizer, requests, settings)
    assert any(answer.frame_indices for answer in batched)
    for request, answer in zip(requests, batched):
        alone = generate(model, tokenizer, [request], settings)[0]
        assert answer.token_ids == alone.token_ids
        assert answer.frame_indices == alone.frame_indices
        for a, b in zip(answer.similarities, alone.similarities):
            assert torch.allclose(a, b, atol=1e-5)


def test_generation_returns_times_frames_and_similarities(vid_prone):
    model, tokenizer = vid_prone
    request = requests_for(tokenizer, [6])[0]
    answer = generate(model, tokenizer, [request], GenerationSettings(max_new_tokens=8, do_sample=False))[0]
    n_vid = answer.token_ids.count(model.config.match_token_id)
    assert n_vid == len(answer.frame_indices) == len(answer.times) == len(answer.similarities) > 0
    for frame, time, sim in zip(answer.frame_indices, answer.times, answer.similarities):
        assert sim.shape == (6,) and sim.sum().item() == pytest.approx(1.0, abs=1e-5)
        assert frame == int(sim.argmax()) and time == request.tags[frame]
    assert "<vid>" not in answer.text and answer.raw_text.count("<vid>") == n_vid
    assert answer.text.count(str(answer.frame_indices[0])) >= 1


def test_sampling_is_reproducible_with_a_seed(tiny):
    model, tokenizer = tiny
    request = requests_for(tokenizer, [4])
    settings = GenerationSettings(max_new_tokens=6, do_sample=True, temperature=0.2)
    runs = [generate(model, tokenizer, request, settings, generator=torch.Generator().manual_seed(7))[0] for _ in "ab"]
    assert runs[0].token_ids == runs[1].token_ids


def test_generation_stops_at_end_token(tiny):
    model, tokenizer = tiny
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    head = model.lm_head.weight
    saved = head[end_id].clone()
    settings = GenerationSettings(max_new_tokens=1, do_sample=False)
    favourite = generate(model, tokenizer, requests_for(tokenizer, [3]), settings)[0].token_ids[0]
    with torch.no_grad():
        head[end_id] = 3 * head[favourite]
    try:
        answer = generate(
            model, tokenizer, requests_for(tokenizer, [3]), GenerationSettings(max_new_tokens=20, do_sample=False)
        )[0]
    finally:
        with torch.no_grad():
            head[end_id] = saved
    assert len(answer.token_ids) < 20 and "<|end|>" not in answer.text


def test_vid_in_a_later_turn_takes_the_frames_of_the_next_placeholder(tiny):
    model, tokenizer = tiny
    text = "<|user|>\n<image>\nFirst?<|end|>\n<|assistant|>\nYes.<|end|>\n<|user|>\n<image>\nAt <vid>?<|end|>\n"
    ids = tokenize(text, tokenizer)
    turns = model.encode_videos([video(3, 9)], [["First?", "At <vid>?"]])[0]
    assert turns.shape[:2] == (2, 3) and not torch.allclose(turns[0], turns[1])
    inputs = model.assemble_inputs(ids[None], None, None, [turns], [[1.0]])
    vid_pos = ids.tolist().index(model.config.match_token_id) + 2 * (3 - 1)  # two placeholders became 3 frames each
    word = model.get_input_embeddings().weight[model.config.match_token_id]
    assert torch.allclose(inputs.inputs_embeds[0, vid_pos], word + turns[1][1], atol=1e-6)
