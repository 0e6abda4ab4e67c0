"""Running a model on benchmarks and scoring it.

`runner` answers any benchmark's samples in batches, sharded and resumable, into `results` files, in a folder whose
`run_record` (run.json) says what produced them; `scoring` is the command every scorer shares; each benchmark is
a package (`etbench`, `charades`) with its `infer` module (what the runner needs to know about it) and its scoring
(`python -m etchat.eval.<benchmark> <pred_path>`). `metrics` holds the metric tools benchmarks share; `plot` draws
timelines of predictions.
"""
