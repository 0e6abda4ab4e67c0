"""The two questions E.T. Chat is asked about a QVHighlights query (docs/design.md §16 says why these).

Both follow E.T. Bench's question style (the video's kind, "Watch the video carefully", the answer format with
placeholders), which E.T. Chat was instruction-tuned on: moment retrieval as E.T. Bench's temporal grounding (TVG),
highlight detection as its video highlight detection (VHD), each answered with `<vid>` times.
"""

MR_QUESTION = (
    "You are given a video about daily activities. Watch the video carefully and find a visual event described by "
    "the sentence: '{}'. The format of your response should be: 'The event happens in <start time> - <end time>'."
)
HD_QUESTION = (
    "You are given a video about daily activities. Watch the video carefully and find the highlight moment "
    "described by the sentence: '{}'. The format of your response should be: 'The highlight moment happens in "
    "<time>'."
)
QUESTIONS = {"mr": MR_QUESTION, "hd": HD_QUESTION}


def question(task: str, query: str) -> str:
    """The question of ``task`` (mr or hd) about ``query`` (its final period dropped, as E.T. Bench writes them)."""
    return QUESTIONS[task].format(query.strip().rstrip(".").strip())
