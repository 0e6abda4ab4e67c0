"""Charades-STA moment retrieval: inference (`etchat.eval.charades.infer`) and scores (`python -m
etchat.eval.charades`, implemented in `etchat.eval.charades.metrics`)."""
