"""Speed and memory benchmarks of E.T. Chat: inference, training and video reading (`python -m etchat.bench`).

Each scenario runs every configuration in its own subprocess (so peak memory is measured per configuration), prints a
table and appends a section to `docs/benchmarks.md`. Models are randomly initialised from a config (`tiny` or the
published `full` geometry), so no weights are needed; videos are generated mp4 files.
"""
