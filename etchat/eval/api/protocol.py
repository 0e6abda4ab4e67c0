"""The chat messages an endpoint gets for one question (docs/design.md §19).

Two model families, as the E.T. Bench authors evaluated them:

* models that read frames (GPT-4o, GPT-4V; ``--input frames``): the sampled frames as images, then the text
  `FRAMES_PREAMBLE` (the authors' words for GPT-4o: how many frames, evenly sampled, from how long a video) followed
  by the question. By default each image is preceded by its time (`FRAME_LABEL`), so the model can answer in the
  video's seconds; ``--no_frame_times`` sends the frames unlabelled, exactly as the authors did;
* models that read videos (Gemini in the paper; a vLLM-served video model here; ``--input video``): the video file
  and the question alone, as open-source models get it.

The question is the benchmark's own: for E.T. Bench the annotation's ``q`` (times written as text: the ``txt``
annotations), for the other benchmarks the question E.T. Chat is asked (`etchat.eval.<benchmark>`).
"""

from __future__ import annotations

from etchat.eval.api.frames import SampledFrames

FRAMES_PREAMBLE = (
    "You are given {num_frames} uniformly sampled frames from a {duration} seconds long video. Try your best to "
    "understand it and do not refuse to answer."
)
FRAME_LABEL = "Frame at {time}s:"
PROTOCOL_TEXTS = {"frames_preamble": FRAMES_PREAMBLE, "frame_label": FRAME_LABEL}


def seconds_text(value: float) -> str:
    """A time as the prompts write it: one decimal (``35.0``)."""
    return f"{round(float(value), 1)}"


def frames_message(question: str, frames: SampledFrames, frame_times: bool = True, detail: str | None = None) -> list:
    """One user message: every frame (after its time label when ``frame_times``), then the preamble and the
    question."""
    content = []
    for time, url in zip(frames.times, frames.images):
        if frame_times:
            content.append({"type": "text", "text": FRAME_LABEL.format(time=seconds_text(time))})
        image = {"url": url, **({"detail": detail} if detail else {})}
        content.append({"type": "image_url", "image_url": image})
    preamble = FRAMES_PREAMBLE.format(num_frames=len(frames.images), duration=seconds_text(frames.duration))
    content.append({"type": "text", "text": f"{preamble} {question}"})
    return [{"role": "user", "content": content}]


def video_message(question: str, video_url: str) -> list:
    """One user message: the video, then the question as it is."""
    content = [{"type": "video_url", "video_url": {"url": video_url}}, {"type": "text", "text": question}]
    return [{"role": "user", "content": content}]
