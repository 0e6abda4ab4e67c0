"""A local web demo: upload a video, ask E.T. Chat about it, click the times of the answer to seek the video.

    python -m etchat.serve.demo --model_path model_zoo/ETChat-Phi3-Mini-Stage-3 [--host 127.0.0.1 --port 7860]

then open http://127.0.0.1:7860. The answer is shown as it is generated; once it is complete, each `<vid>` time
(mm:ss.s) becomes a link that moves the video player there, and the timeline plot (thumbnails, matched times,
similarity curves) appears below. Questions about the same video form a conversation (see
``etchat.serve.session``); a new video or "New conversation" starts another. The model answers one question at a time.

The page is built with Gradio. The player is Gradio's own video component; the links are handled by a click listener
on the answer (``SEEK_JS``) that sets ``currentTime`` of the ``<video>`` element inside the player.
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import queue
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from etchat.data.tokenization import format_seconds
from etchat.data.video import VideoClip
from etchat.serve.answer import ChatAnswer
from etchat.serve.options import add_session_args, report_input_error, setup_logging
from etchat.serve.session import (
    MAX_QUESTION_CHARS,
    ChatInputError,
    VideoChat,
    chat_settings,
    check_question,
    frame_size,
    load_chat_model,
    plot_answer,
    read_video,
)

if TYPE_CHECKING:
    from etchat.model.generation import GenerationSettings

logger = logging.getLogger(__name__)

PLAYER_ID = "etchat-video"
ANSWER_ID = "etchat-answer"
# Runs once in the browser with `element` the answer component; the listener survives every re-render of its HTML.
SEEK_JS = f"""
element.addEventListener('click', (event) => {{
    const link = event.target.closest('[data-time]');
    if (!link) return;
    event.preventDefault();
    const player = document.querySelector('#{PLAYER_ID} video');
    if (!player) return;
    player.currentTime = parseFloat(link.dataset.time);
    player.scrollIntoView({{block: 'nearest'}});
}});
"""
CSS = f"""
#{ANSWER_ID} .etchat-turn {{ margin-bottom: 1em; }}
#{ANSWER_ID} .etchat-a {{ white-space: pre-wrap; }}
#{ANSWER_ID} .etchat-time {{ font-weight: 600; text-decoration: underline; cursor: pointer; }}
"""
MAX_UPLOAD_MB = 500
# Uploads older than an hour are deleted every ten minutes while the demo runs (all of them when it stops).
UPLOAD_CACHE_LIFETIME = (600, 3600)
# The demo's scratch folder (uploads, plots) is <temp>/etchat_demo_<pid>_<random>: one whose process has ended (a
# demo killed without a chance to clean up) is removed when the next demo starts.
SCRATCH_PREFIX = "etchat_demo_"
EMPTY_ANSWER = '<p class="etchat-hint">Upload a video, ask a question.</p>'


# --------------------------------------------------------------------------------------------------------------------
# HTML of the conversation
# --------------------------------------------------------------------------------------------------------------------


def time_link(seconds: float) -> str:
    return f'<a href="#" class="etchat-time" data-time="{seconds:.3f}">{format_seconds(seconds)}</a>'


def answer_html(parts: list[str | float]) -> str:
    return "".join(html.escape(p) if isinstance(p, str) else time_link(p) for p in parts)


def turn_html(question: str, answer: str, done: bool) -> str:
    state = "done" if done else "streaming"
    return (
        f'<div class="etchat-turn" data-state="{state}">'
        f'<p class="etchat-q"><b>Q:</b> {html.escape(question)}</p>'
        f'<p class="etchat-a"><b>A:</b> {answer}</p></div>'
    )


def conversation_html(turns: list[ChatAnswer], pending: tuple[str, str] | None = None) -> str:
    """Finished turns with clickable times, then the (question, text so far) of the answer being generated."""
    blocks = [turn_html(t.question, answer_html(t.parts), done=True) for t in turns]
    if pending is not None:
        blocks.append(turn_html(pending[0], html.escape(pending[1]) or "&hellip;", done=False))
    return "".join(blocks) or EMPTY_ANSWER


# --------------------------------------------------------------------------------------------------------------------
# Answering
# --------------------------------------------------------------------------------------------------------------------


def stream_answer(chat: VideoChat, question: str) -> Iterator[str | ChatAnswer]:
    """The text of the answer as it grows (whole, not pieces), then the ChatAnswer; generation runs in a thread."""
    updates: queue.Queue = queue.Queue()

    def work() -> None:
        try:
            updates.put(chat.ask(question, on_text=updates.put))
        except BaseException as error:  # handed to the consumer, which re-raises it
            updates.put(error)

    threading.Thread(target=work, daemon=True, name="etchat-generate").start()
    text = ""
    while True:
        item = updates.get()
        if isinstance(item, BaseException):
            raise item
        if isinstance(item, ChatAnswer):
            yield item
            return
        text += item
        yield text


class DemoBackend:
    """The model and what the page's events do with it; the last decoded video is kept for follow-up questions."""

    def __init__(
        self,
        model,
        tokenizer,
        settings: GenerationSettings,
        fps: float = 1.0,
        max_video_len: float = 600.0,
        seed: int | None = None,
        plot_dir: str | None = None,
        max_question_chars: int = MAX_QUESTION_CHARS,
    ):
        self.model, self.tokenizer, self.settings = model, tokenizer, settings
        self.fps, self.max_video_len, self.seed = fps, max_video_len, seed
        self.max_question_chars = max_question_chars
        self.frame_size = frame_size(model)
        self.plot_dir = Path(plot_dir or tempfile.mkdtemp(prefix="etchat_demo_"))
        self._cached: tuple[tuple, VideoClip] | None = None
        self._plots = 0
        self._lock = threading.Lock()

    def clip(self, path: str) -> VideoClip:
        key = (path, os.path.getmtime(path) if os.path.exists(path) else None)
        if self._cached is None or self._cached[0] != key:
            self._cached = None  # the old clip goes before the new one is decoded
            self._cached = (key, read_video(path, self.fps, self.max_video_len, self.frame_size))
        return self._cached[1]

    def next_plot_path(self) -> Path:
        with self._lock:
            self._plots += 1
            return self.plot_dir / f"timeline_{self._plots}.png"

    def respond(self, video_path: str | None, question: str, state: dict | None):
        """Event handler of "Ask": yields (conversation HTML, plot, state, question box) as the answer grows."""
        import gradio as gr

        state = state if state and state.get("video") == video_path else {"video": video_path, "turns": []}
        try:
            if not video_path:
                raise ChatInputError("upload a video first")
            question = check_question(question, self.max_question_chars)
            clip = self.clip(video_path)
        except ChatInputError as error:
            raise gr.Error(str(error)) from error
        chat = VideoChat(
            self.model,
            self.tokenizer,
            clip,
            self.settings,
            history=state["turns"],
            seed=self.seed,
            max_question_chars=self.max_question_chars,
        )
        turns = list(state["turns"])
        for item in stream_answer(chat, question):
            if isinstance(item, str):
                yield conversation_html(turns, (question, item)), gr.skip(), state, ""
        answer = item
        plot = plot_answer(answer, clip, self.next_plot_path())
        state = {"video": video_path, "turns": [*turns, answer]}
        yield conversation_html(state["turns"]), str(plot), state, ""

    @staticmethod
    def reset(video_path: str | None = None):
        """A new conversation: empty answer, no plot."""
        return EMPTY_ANSWER, None, {"video": video_path, "turns": []}


def build_demo(backend: DemoBackend):
    """The Gradio page around ``backend``."""
    import gradio as gr

    with gr.Blocks(title="E.T. Chat", analytics_enabled=False, delete_cache=UPLOAD_CACHE_LIFETIME) as demo:
        gr.Markdown("## E.T. Chat\nAsk about moments in your video. Click a time in the answer to jump there.")
        state = gr.State({"video": None, "turns": []})
        with gr.Row():
            with gr.Column(scale=1):
                video = gr.Video(label="Video", sources=["upload"], elem_id=PLAYER_ID)
                question = gr.Textbox(label="Question", placeholder="When does ...?", elem_id="etchat-question")
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="etchat-ask")
                    clear = gr.Button("New conversation", elem_id="etchat-clear")
            with gr.Column(scale=1):
                answer = gr.HTML(EMPTY_ANSWER, label="Answer", elem_id=ANSWER_ID, js_on_load=SEEK_JS)
        plot = gr.Image(label="Timeline", show_label=False, type="filepath", interactive=False, elem_id="etchat-plot")
        inputs, outputs = [video, question, state], [answer, plot, state, question]
        # Both events share one queue slot: the model answers one question at a time.
        ask.click(backend.respond, inputs, outputs, concurrency_limit=1, concurrency_id="model")
        question.submit(backend.respond, inputs, outputs, concurrency_limit=1, concurrency_id="model")
        clear.click(backend.reset, [video], [answer, plot, state])
        video.change(backend.reset, [video], [answer, plot, state])
    return demo


# --------------------------------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m etchat.serve.demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_session_args(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--max_upload_mb", type=float, default=MAX_UPLOAD_MB, help="larger uploads are refused by the server"
    )
    return parser.parse_args(argv)


def max_upload_bytes(megabytes: float) -> int:
    """``--max_upload_mb`` as the byte count Gradio takes (its size strings accept no fractional megabytes)."""
    if not megabytes > 0:
        raise ChatInputError(f"--max_upload_mb must be positive, got {megabytes}")
    return int(megabytes * 1024 * 1024)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_scratch(temp_root: str | None = None) -> list[Path]:
    """Delete the scratch folders of earlier demos on this machine whose process has ended; returns them."""
    removed = []
    for folder in Path(temp_root or tempfile.gettempdir()).glob(f"{SCRATCH_PREFIX}*_*"):
        pid = folder.name[len(SCRATCH_PREFIX) :].split("_", 1)[0]
        if folder.is_dir() and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        logger.info("Removed the uploads of %d earlier demo run(s) that had ended", len(removed))
    return removed


def _stop_on_sigterm() -> None:
    """Handle SIGTERM (a service manager, `kill`) as Ctrl-C: Gradio closes its server and the scratch folder is
    removed on the way out."""

    def stop(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # nothing may phone home
    try:
        max_file_size = max_upload_bytes(args.max_upload_mb)
        model, tokenizer = load_chat_model(args.model_path, args.device, args.dtype, args.model_revision)
        settings = chat_settings(model, args.greedy, args.temperature, args.max_new_tokens)
    except ChatInputError as error:
        return report_input_error("etchat.serve.demo", error, args.verbose)
    remove_stale_scratch()
    _stop_on_sigterm()
    # Uploads and plots live in folders of this run, removed when it ends (Ctrl-C, SIGTERM or a normal stop).
    with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}{os.getpid()}_") as scratch:
        os.environ["GRADIO_TEMP_DIR"] = os.path.join(scratch, "uploads")
        backend = DemoBackend(
            model,
            tokenizer,
            settings,
            args.fps,
            args.max_video_len,
            args.seed,
            plot_dir=os.path.join(scratch, "plots"),
            max_question_chars=args.max_question_chars,
        )
        demo = build_demo(backend)
        print(f"E.T. Chat demo on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
        demo.queue().launch(
            server_name=args.host,
            server_port=args.port,
            show_error=True,
            ssr_mode=False,
            css=CSS,
            footer_links=[],
            quiet=not args.verbose,
            max_file_size=max_file_size,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
