"""The dense-captioning questions E.T. Chat is asked, one per data set (docs/design.md §17 says why these).

They follow E.T. Bench's DVC question (the video's kind, "Watch the video carefully and densely describe all the
...", start and end times plus a concise description, and the answer format ``<start time> - <end time>,
<description>``), whose answers E.T. Bench's dense-caption rules read back.
"""

_FORMAT = "The format of your response should be: '<start time> - <end time>, <description>'."
YOUCOOK2_QUESTION = (
    "You are given a cooking video. Watch the video carefully and densely describe all the cooking steps. For each "
    f"step, you need to determine the start and end times and provide a concise description. {_FORMAT}"
)
ACTIVITYNET_QUESTION = (
    "You are given a video about daily activities. Watch the video carefully and densely describe all the events. "
    f"For each event, you need to determine the start and end times and provide a concise description. {_FORMAT}"
)
QUESTIONS = {"youcook2": YOUCOOK2_QUESTION, "activitynet": ACTIVITYNET_QUESTION}
