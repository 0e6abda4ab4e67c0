"""The video chat (etchat.serve):  streaming, `<vid>` times, JSON, plots, conversations, and bad input via the CLI.

The tiny model is untrained, so answers are gibberish: the tests check structure against independent expectations
(the frame times of the decoded video, hand-written prompts, the colours of the test video's frames), not content.
"""

import json
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.video_utils import index_color, write_test_video

REPO = Path(__file__).resolve().parents[1]
QUESTION = "When does the red circle appear?"
# 40 frames at 4 fps: 10 s, sampled at 1 fps -> video frames 0, 4, ..., 36 at 0.0, 1.0, ..., 9.0 s.
NUM_FRAMES, VIDEO_FPS = 40, 4
MAX_NEW_TOKENS = 24


def mmss(seconds: float) -> str:
    """mm:ss.s written out by hand, to check the chat's time strings against."""
    minutes = int(seconds // 60)
    return f"{minutes:02d}:{seconds - 60 * minutes:04.1f}"


def build_chat_checkpoint(spec: dict, out_dir: str, video_path: str) -> str:
    """A tiny E.T. Chat checkpoint whose untrained model writes `<vid>` now and then among other tokens.

    The `<vid>` row of the output embedding is pointed along the mean final hidden state of a short answer, so its
    logit is raised by about 0.5 at typical positions: enough to win greedy decoding sometimes, not always.
    """
    from etchat.model.loading import save_etchat
    from etchat.serve.session import VideoChat, chat_settings, read_video
    from etchat.toy.tiny import build_untrained

    torch.manual_seed(0)
    model, tokenizer = build_untrained(spec)
    states = []
    hook = model.model.norm.register_forward_hook(lambda module, args, out: states.append(out[0, -1].detach()))
    settings = chat_settings(model, greedy=True, max_new_tokens=20)
    VideoChat(model, tokenizer, read_video(video_path), settings).ask("When?")
    hook.remove()
    mean = torch.stack(states).mean(0)
    with torch.no_grad():
        model.lm_head.weight[model.config.match_token_id] = 0.5 * mean / mean.norm() ** 2
    save_etchat(model, tokenizer, out_dir)
    return out_dir


@pytest.fixture(scope="module")
def video_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("chat_video") / "clip.mp4"
    write_test_video(path, NUM_FRAMES, VIDEO_FPS)
    return str(path)


@pytest.fixture(scope="module")
def chat_checkpoint(tiny_base, video_path, tmp_path_factory):
    return build_chat_checkpoint(tiny_base, str(tmp_path_factory.mktemp("chat_etchat")), video_path)


@pytest.fixture(scope="module")
def chat_model(chat_checkpoint):
    from etchat.serve.session import load_chat_model

    return load_chat_model(chat_checkpoint, device="cpu")


@pytest.fixture
def chat(chat_model, video_path):
    from etchat.serve.session import VideoChat, chat_settings, read_video

    model, tokenizer = chat_model
    settings = chat_settings(model, greedy=True, max_new_tokens=MAX_NEW_TOKENS)
    return VideoChat(model, tokenizer, read_video(video_path), settings)


def run_cli(*args, stdin=None, timeout=300) -> subprocess.Popen:
    """Start ``python -m etchat.serve.chat ARGS`` (several may run at once: each process spends seconds on imports)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "etchat.serve.chat", *map(str, args)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    process.stdin_text = stdin
    process.timeout = timeout
    return process


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    out, err = process.communicate(process.stdin_text, timeout=process.timeout)
    return process.returncode, out, err


# --------------------------------------------------------------------------------------------------------------------
# In-process: answers, streaming, conversations
# --------------------------------------------------------------------------------------------------------------------


def test_time_strings():
    from etchat.serve.answer import answer_parts, join_parts, seconds_text

    assert seconds_text(12.0) == "12" and seconds_text(12.5) == "12.5" and seconds_text(0.0) == "0"
    parts = answer_parts("from <vid> to <vid>.", [3.0, 75.5])
    assert parts == ["from ", 3.0, " to ", 75.5, "."]
    assert join_parts(parts) == "from 00:03.0 to 01:15.5."
    # A `<vid>` without a match (a model without matching) stays as it is.
    assert join_parts(answer_parts("at <vid>", [])) == "at <vid>"


def test_answer_stream_shows_times_and_holds_back_stop_string(chat_model):
    from etchat.model.generation import GenerationSettings
    from etchat.serve.answer import AnswerStream

    _, tokenizer = chat_model
    match_id = tokenizer.convert_tokens_to_ids("<vid>")
    frame_times = [0.0, 0.5, 1.0, 1.5, 2.0, 2.5]
    settings = GenerationSettings(stop_strings=("<|end|>",), eos_token_ids=(tokenizer.eos_token_id,))
    stream = AnswerStream(tokenizer, match_id, frame_times, settings)
    ids = tokenizer("It happens from <vid> to <vid>.<|end|>", add_special_tokens=False).input_ids
    assert ids.count(match_id) == 2
    frames = iter([2, 5])
    pieces = [stream.push(i, (next(frames), None) if i == match_id else (0, None)) for i in ids]
    assert "".join(pieces) == "It happens from 00:01.0 to 00:02.5."
    assert not any("<|" in p for p in pieces)  # the stop string is never shown, not even its start
    assert stream.push(tokenizer.eos_token_id) == ""
    assert stream.finish("It happens from 00:01.0 to 00:02.5.") == ""

    # An answer ending in what could have begun the stop string gets it when generation ends.
    stream = AnswerStream(tokenizer, match_id, frame_times, settings)
    pieces = [stream.push(i) for i in tokenizer("a <", add_special_tokens=False).input_ids]
    assert "".join(pieces) == "a"
    assert stream.finish("a <") == " <"


def test_vid_spelled_out_in_plain_tokens_stays_text(chat_model):
    """Only the real `<vid>` token gets a time, in the stream and in the finished answer."""
    from etchat.model.generation import GenerationSettings, MatchedAnswer
    from etchat.serve.answer import AnswerStream, ChatAnswer

    _, tokenizer = chat_model
    match_id = tokenizer.convert_tokens_to_ids("<vid>")
    settings = GenerationSettings(stop_strings=("<|end|>",), eos_token_ids=(tokenizer.eos_token_id,))

    def ids(text):
        return tokenizer(text, add_special_tokens=False).input_ids

    token_ids = ids("at <vid") + tokenizer.convert_tokens_to_ids([">"]) + ids(" then") + [match_id] + ids(" end")
    raw_text = tokenizer.decode(token_ids, skip_special_tokens=False).strip()
    real = raw_text.rindex("<vid>")
    expected = raw_text[:real] + "00:01.0" + raw_text[real + len("<vid>") :]
    assert raw_text.count("<vid>") == 2 and expected.startswith("at <vid>")

    stream = AnswerStream(tokenizer, match_id, [0.0, 0.5, 1.0], settings)
    shown = "".join(stream.push(i, (2, None) if i == match_id else None) for i in token_ids)
    assert shown + stream.finish(expected) == expected

    matched = MatchedAnswer(
        text="", raw_text=raw_text, token_ids=token_ids, frame_indices=[2], times=[1.0], match_offsets=[real]
    )
    answer = ChatAnswer.from_matched("When?", matched, [0.0, 0.5, 1.0])
    assert answer.text == expected
    assert answer.history_text() == raw_text[:real] + "1" + raw_text[real + len("<vid>") :]


def test_ask_streams_the_answer_with_matched_times(chat, video_path):
    pieces = []
    answer = chat.ask(QUESTION, on_text=pieces.append)

    assert len(pieces) > 1  # streamed, not printed at the end
    assert "".join(pieces) == answer.text
    assert answer.raw_text.count("<vid>") == len(answer.times) >= 1  # the fixture's bias makes `<vid>` appear
    # Frame i of the 1 fps sampling is at i seconds; times are those of the matched frames.
    assert answer.frame_times == [float(i) for i in range(NUM_FRAMES // VIDEO_FPS)]
    assert answer.times == [answer.frame_times[i] for i in answer.frame_indices]
    shown = [mmss(t) for t in answer.times]
    assert re.findall(r"\d\d:\d\d\.\d", answer.text) == shown
    assert answer.text == answer.raw_text.replace("<vid>", "{}").format(*shown)
    for frame, sim in zip(answer.frame_indices, answer.similarities):
        assert len(sim) == len(answer.frame_times)
        assert sum(sim) == pytest.approx(1.0, abs=1e-4)  # a softmax over the frames
        assert int(np.argmax(sim)) == frame  # the matched frame is the best match of its step


def test_follow_up_prompt_holds_history_with_times_as_seconds(chat):
    first = chat.ask(QUESTION)
    assert first.times
    reply = first.raw_text.replace("<vid>", "{}").format(*[f"{t:g}" for t in first.times])
    expected = (
        "<|system|>\nYou are a helpful AI assistant.<|end|>"
        f"\n<|user|>\n<image>\n{QUESTION}<|end|>"
        f"\n<|assistant|>\n{reply}<|end|>"
        "\n<|user|>\nAnd when does it end?<|end|>"
        "\n<|assistant|>\n"
    )
    assert chat.prompt("And when does it end?") == expected
    second = chat.ask("And when does it end?")
    assert [a.question for a in chat.history] == [QUESTION, "And when does it end?"]
    assert second.question == "And when does it end?"
    chat.reset()
    assert chat.prompt("Again?").count("<|user|>") == 1


def test_oldest_turns_leave_a_prompt_that_is_too_long(chat, monkeypatch):
    chat.ask(QUESTION)
    chat.ask("Second question?")
    with_all = len(chat.tokenizer(chat.prompt("Third?")).input_ids)
    # Room for the frames, the last turn and the new question, but not the first turn.
    monkeypatch.setattr("etchat.serve.session.context_length", lambda model, tokenizer: with_all + 10)
    prompt = chat.prompt("Third?")
    assert QUESTION not in prompt
    assert prompt.count("<image>") == 1 and prompt.index("<image>") < prompt.index("Second question?")


def test_bad_question_is_refused(chat):
    from etchat.serve.session import ChatInputError

    for question in ("", "   ", "what is <vid>?", "<image> here"):
        with pytest.raises(ChatInputError):
            chat.ask(question)


# --------------------------------------------------------------------------------------------------------------------
# Through the command line
# --------------------------------------------------------------------------------------------------------------------


def thumbnail_color_found(image: np.ndarray, color, tolerance: int = 12, min_pixels: int = 200) -> bool:
    close = np.abs(image.astype(int) - np.array(color)).max(-1) <= tolerance
    return int(close.sum()) >= min_pixels


def check_json_record(record: dict, video_path: str) -> None:
    assert record["question"] == QUESTION and record["video"] == video_path and record["duration"] == 10.0
    assert record["times"] and record["raw_answer"].count("<vid>") == len(record["times"])
    assert record["times"] == [record["frame_times"][i] for i in record["frame_indices"]]
    assert record["frame_times"] == [float(i) for i in range(NUM_FRAMES // VIDEO_FPS)]
    assert len(record["similarities"]) == len(record["times"])
    assert all(len(s) == len(record["frame_times"]) for s in record["similarities"])


def check_plot(path: Path) -> None:
    image = np.asarray(Image.open(path).convert("RGB"))
    assert 800 <= image.shape[1] <= 3000 and 300 <= image.shape[0] <= 2000
    # Thumbnails of the decoded clip: first, middle and last sampled frames (video frames 0, 20, 36).
    for frame in (0, 20, 36):
        assert thumbnail_color_found(image, index_color(frame)), f"no thumbnail of frame {frame} in the plot"


def test_main_prints_answer_json_and_plot(chat_checkpoint, video_path, tmp_path, capsys):
    from etchat.serve.chat import main

    common = ["--model_path", chat_checkpoint, "--video", video_path, "--greedy"]
    common += ["--max_new_tokens", str(MAX_NEW_TOKENS)]
    plot_path = tmp_path / "timeline.png"
    assert main([*common, "--plot", str(plot_path), QUESTION]) == 0
    out_text, err_text = capsys.readouterr()
    assert main([*common, "--json", QUESTION]) == 0
    record = json.loads(capsys.readouterr().out)

    check_json_record(record, video_path)
    # Greedy decoding: the printed text is the answer of the JSON run, times as mm:ss.s.
    assert out_text == record["answer"] + "\n"
    assert re.findall(r"\d\d:\d\d\.\d", out_text) == [mmss(t) for t in record["times"]]
    check_plot(plot_path)
    assert str(plot_path) in err_text


@pytest.mark.slow
def test_cli_streams_answer_and_chats(chat_checkpoint, video_path, tmp_path):
    common = ["--model_path", chat_checkpoint, "--video", video_path, "--greedy", "--max_new_tokens", MAX_NEW_TOKENS]
    plot_path = tmp_path / "timeline.png"
    text_run = run_cli(*common, "--plot", plot_path, QUESTION)
    chat_run = run_cli(*common, "--json", "--plot", plot_path, stdin=f"{QUESTION}\n\nAnd then?\n/quit\n")
    (rc_text, out_text, err_text), (rc_chat, out_chat, err_chat) = finish(text_run), finish(chat_run)
    assert rc_text == 0, err_text
    assert rc_chat == 0, err_chat

    # The interactive chat with --json writes one JSON line per question on stdout; the empty line is skipped.
    turns = [json.loads(line) for line in out_chat.splitlines()]
    assert [t["question"] for t in turns] == [QUESTION, "And then?"]
    check_json_record(turns[0], video_path)
    assert "You:" in err_chat
    # Same first prompt, greedy: the streamed text of the one-question run is the chat's first answer.
    assert out_text == turns[0]["answer"] + "\n"
    check_plot(plot_path)
    for turn in (1, 2):  # one plot per question in the interactive chat
        check_plot(tmp_path / f"timeline_{turn}.png")


def write_mismatched_checkpoint(source: str, out_dir: Path) -> Path:
    """A copy of ``source`` without the frm_head weights."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, out_dir)
    weights = out_dir / "model.safetensors"
    state = {k: v for k, v in load_file(weights).items() if "frm_head" not in k}
    save_file(state, weights, metadata={"format": "pt"})
    return out_dir


def write_broken_checkpoints(source: str, out_dir: Path) -> tuple[Path, Path]:
    """Copies of ``source``: one with its weights cut short (an interrupted copy), one without tokenizer files."""
    import shutil

    truncated, no_tokenizer = out_dir / "truncated", out_dir / "no_tokenizer"
    shutil.copytree(source, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    shutil.copytree(source, no_tokenizer)
    for name in ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt"):
        (no_tokenizer / name).unlink(missing_ok=True)
    return truncated, no_tokenizer


def test_cli_bad_input_is_one_error_line(chat_checkpoint, tiny_base, video_path, tmp_path, capsys):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    long_video = tmp_path / "long.mp4"
    write_test_video(long_video, 30, 1)  # 30 s
    not_etchat = tiny_base["model_name_or_path"]  # a plain Phi-3 folder
    mismatched = write_mismatched_checkpoint(chat_checkpoint, tmp_path / "mismatched")
    truncated, no_tokenizer = write_broken_checkpoints(chat_checkpoint, tmp_path)
    model = ["--model_path", chat_checkpoint]
    video = ["--video", video_path]
    cases = {
        "missing video": ([*model, "--video", tmp_path / "nope.mp4", QUESTION], ["nope.mp4", "no such file"]),
        "empty video": ([*model, "--video", empty, QUESTION], ["empty.mp4", "empty"]),
        "corrupt video": ([*model, "--video", corrupt, QUESTION], ["corrupt.mp4"]),
        "long video": ([*model, "--video", long_video, "--max_video_len", 20, QUESTION], ["long.mp4", "too long"]),
        "empty question": ([*model, "--video", video_path, "  "], ["question is empty"]),
        "missing checkpoint": (["--model_path", tmp_path / "none", "--video", video_path, QUESTION], ["none"]),
        "not E.T. Chat": (["--model_path", not_etchat, "--video", video_path, QUESTION], ["not an E.T. Chat"]),
        "mismatched checkpoint": (["--model_path", mismatched, "--video", video_path, QUESTION], ["frm_head"]),
        "cut weights": (["--model_path", truncated, *video, QUESTION], ["model.safetensors", "truncated"]),
        "no tokenizer": (["--model_path", no_tokenizer, *video, QUESTION], ["no_tokenizer", "no tokenizer files"]),
        "long question": ([*model, *video, "why " * 600], ["2399 characters", "limit of 2000"]),
    }
    for name, (args, words) in cases.items():
        rc, out, err = run_main_as_a_process(list(map(str, args)), capsys)
        check_one_error_line(name, rc, out, err, words)
    # The same in a real process, once: the module's __main__ block turns main's status into the exit status, and
    # nothing else (a library's log or warning) reaches stderr.
    name, (args, words) = "missing video", cases["missing video"]
    check_one_error_line(name, *finish(run_cli(*args, timeout=180)), words)


def check_one_error_line(name: str, rc: int, out: str, err: str, words: list[str]) -> None:
    lines = err.strip().splitlines()
    assert rc == 2, f"{name}: exit code {rc}, stderr {err!r}"
    assert len(lines) == 1 and "Traceback" not in err, f"{name}: {err!r}"
    assert lines[0].startswith("etchat.serve.chat: error: "), f"{name}: {err!r}"
    for word in words:
        assert word in lines[0], f"{name}: {word!r} not in {lines[0]!r}"
    assert out == "", f"{name}: {out!r}"


def run_main_as_a_process(argv: list[str], capsys) -> tuple[int, str, str]:
    """(status, stdout, stderr) of ``python -m etchat.serve.chat ARGV`` run in this process: the root logger starts
    unconfigured, as in a new process, so the command's own logging set-up writes to stderr; transformers' handler
    writes to the captured stderr too; and a warning that Python would print counts as a stderr line."""
    from transformers.utils import logging as hf_logging

    from etchat.serve.chat import main

    capsys.readouterr()
    root, library = logging.getLogger(), hf_logging.get_logger()
    saved = (root.handlers[:], root.level, [(h, h.stream) for h in library.handlers if hasattr(h, "stream")])
    root.handlers.clear()
    for handler, _ in saved[2]:
        handler.setStream(sys.stderr)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            status = main(argv)
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
        root.handlers[:], root.level = saved[0], saved[1]
        for handler, stream in saved[2]:
            handler.setStream(stream)
    out, err = capsys.readouterr()
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    return status, out, err + "".join(f"warning: {w.message}\n" for w in shown)
