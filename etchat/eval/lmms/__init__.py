"""E.T. Chat and the project's benchmarks in lmms-eval (docs/design.md §19).

* ``tasks/``: E.T. Bench (the 12 tasks as the group ``etbench``, in four category groups whose means are the Merged
  row; the 470-sample subset as ``etbench_subset``), ``charades_sta``, ``qvhighlights``, ``youcook2_dvc`` and
  ``activitynet_dvc``, scored by the project's scorers. lmms-eval finds them with
  ``--include_path $(python -m etchat.eval.lmms)``.
* `model`: E.T. Chat as the lmms-eval model ``etchat``, registered through the ``lmms_eval.models`` entry point of
  this package (`manifest`).
"""

from __future__ import annotations

from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent / "tasks"
MODEL_CLASS = "etchat.eval.lmms.model.ETChat"


def manifest():
    """The payload of the ``lmms_eval.models`` entry point (lmms-eval calls it when it builds its model registry)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="etchat", simple_class_path=MODEL_CLASS)
