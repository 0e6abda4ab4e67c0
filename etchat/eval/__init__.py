"""Running a model on benchmarks and scoring it.

`runner` answers any benchmark's samples in batches, sharded and resumable, into `results` files, in a folder whose
`run_record` (run.json) says what produced them; `scoring` is the command every scorer shares; each benchmark is
a package (`etbench`, `charades`) with its `infer` module (what the runner needs to know about it) and its scoring
(`python -m etchat.eval.<benchmark> <pred_path>`). `metrics` holds the metric tools benchmarks share; `plot` draws
timelines of predictions. Every scorer also leaves the per-sample statistics behind its numbers (`sample_scores`) and
the protocol card of the run (`protocol`, from the run record that `run_record` reads), from which `report` makes the
results report (`python -m etchat.eval.report`). Other models: `answers` reads free-form answers into the benchmarks'
records, `api` runs any OpenAI-compatible endpoint on them, `lmms` makes them lmms-eval tasks and E.T. Chat an
lmms-eval model.
"""
