"""QVHighlights moment retrieval and highlight detection: inference (`etchat.eval.qvhighlights.infer`) and the
official Moment-DETR scores (`python -m etchat.eval.qvhighlights`, implemented in `evaluate`, `metrics`, `formats`)."""
