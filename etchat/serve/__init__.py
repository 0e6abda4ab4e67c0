"""Asking a model about your own video: the conversation library (`session`, `answer`), the command-line chat
(`python -m etchat.serve.chat`) and the local web demo (`python -m etchat.serve.demo`)."""
