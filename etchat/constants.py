"""Token ids and strings shared by data, model and inference code."""

IGNORE_INDEX = -100
# Sentinel id standing for a video/image placeholder inside input_ids; replaced by frame tokens when embedding.
VIDEO_TOKEN_INDEX = -200
VIDEO_PLACEHOLDER = "<image>"
MATCH_TOKEN = "<vid>"

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
