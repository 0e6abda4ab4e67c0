"""E.T. Chat: a time-sensitive video LLM, with its training, inference, scoring and demo (docs/design.md)."""

__version__ = "0.1.0"
