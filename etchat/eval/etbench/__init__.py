"""E.T. Bench: inference (`etchat.eval.etbench.infer`) and the official scoring (`python -m etchat.eval.etbench`, or
`python compute_metrics.py`).

Where things are: `tasks` (one spec per task: fields, metrics, scorer, report columns), `parsing` (how answers are
read), `scorers` and `dense_captioning` (how a group is scored), `predictions` (files, grouping, subset), `report`
(tables, Overall and Merged rows), `compute_metrics` (the command).
"""
