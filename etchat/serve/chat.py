"""Ask E.T. Chat about your own video on the command line.

    python -m etchat.serve.chat --model_path model_zoo/ETChat-Phi3-Mini-Stage-3 --video clip.mp4 "When does it jump?"
    python -m etchat.serve.chat --model_path ... --video clip.mp4 --json "When does the dog jump?"
    python -m etchat.serve.chat --model_path ... --video clip.mp4 --plot timeline.png "When does the dog jump?"
    python -m etchat.serve.chat --model_path ... --video clip.mp4    # no question: an interactive, multi-turn chat

The answer is printed as it is generated. Each `<vid>` token is shown as the time (mm:ss.s) of the frame it matched
at the step that produced it. ``--json`` prints one JSON object per question instead: the answer, the raw answer
(with `<vid>`), the matched times, frame indices, the similarity of every `<vid>` over the frames and the frame
times. ``--plot`` draws the video's timeline with thumbnails, the matched times and the similarity curves (in the
interactive chat, one file per question: ``timeline_1.png``, ``timeline_2.png``...).

Questions about the video form a conversation (see `etchat.serve.session`). In the interactive chat, ``/reset``
starts a new conversation about the same video and ``/quit`` (or Ctrl-D) ends it.

Bad input (a missing, unreadable or too long video, an empty question, a folder that is not an E.T. Chat
checkpoint) is reported in one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from etchat.data.tokenization import format_seconds
from etchat.serve.options import add_session_args, report_input_error, setup_session_logging
from etchat.serve.session import (
    ChatInputError,
    VideoChat,
    chat_settings,
    check_question,
    load_chat_model,
    plot_answer,
    read_video,
)

QUIT_COMMANDS = ("/quit", "/exit")
RESET_COMMAND = "/reset"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.serve.chat", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("question", nargs="?", default=None, help="the question; without it, an interactive chat")
    parser.add_argument("--video", required=True, help="the video file")
    add_session_args(parser)
    parser.add_argument("--json", action="store_true", help="print the answer and its matches as JSON")
    parser.add_argument("--plot", metavar="PNG", help="write the answer's timeline plot here")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def numbered_path(path: str, number: int | None) -> Path:
    path = Path(path)
    return path if number is None else path.with_name(f"{path.stem}_{number}{path.suffix or '.png'}")


def answer_once(chat: VideoChat, question: str, args: argparse.Namespace, plot_number: int | None = None) -> None:
    def print_text(text: str) -> None:
        print(text, end="", flush=True)

    answer = chat.ask(question, on_text=None if args.json else print_text)
    if args.json:
        print(json.dumps({"video": args.video, "duration": chat.clip.duration, **answer.to_json()}), flush=True)
    else:
        print(flush=True)
    if args.plot:
        path = plot_answer(answer, chat.clip, numbered_path(args.plot, plot_number))
        print(f"timeline plot: {path}", file=sys.stderr)


def interactive(chat: VideoChat, args: argparse.Namespace) -> None:
    # With --json, stdout carries only the JSON lines; the dialogue goes to stderr.
    console = sys.stderr if args.json else sys.stdout
    duration = format_seconds(chat.clip.duration)
    print(f"Chatting about {args.video} ({duration}). /reset: new conversation, /quit: end.", file=console)
    turn = 0
    while True:
        print("\nYou: ", end="", file=console, flush=True)
        try:
            question = input().strip()
        except EOFError:
            print(file=console)
            return
        if question in QUIT_COMMANDS:
            return
        if question == RESET_COMMAND:
            chat.reset()
            print("(new conversation)", file=console)
            continue
        if not question:
            continue
        try:
            check_question(question, args.max_question_chars)
        except ChatInputError as error:
            print(f"error: {error}", file=sys.stderr)
            continue
        turn += 1
        if not args.json:
            print("E.T. Chat: ", end="", flush=True)
        answer_once(chat, question, args, plot_number=turn)


def run(args: argparse.Namespace) -> None:
    if args.question is not None:
        check_question(args.question, args.max_question_chars)
    clip = read_video(args.video, args.fps, args.max_video_len)
    model, tokenizer = load_chat_model(args.model_path, args.device, args.dtype, args.model_revision)
    settings = chat_settings(model, args.greedy, args.temperature, args.max_new_tokens)
    chat = VideoChat(model, tokenizer, clip, settings, seed=args.seed, max_question_chars=args.max_question_chars)
    if args.question is None:
        interactive(chat, args)
    else:
        answer_once(chat, args.question, args)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_session_logging(args.verbose)
    try:
        run(args)
    except ChatInputError as error:
        return report_input_error("etchat.serve.chat", error, args.verbose)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
