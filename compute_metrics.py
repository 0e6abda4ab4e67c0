"""E.T. Bench scoring: ``python compute_metrics.py <file-or-folder> [--subset]``, as the official script is called.

A thin entry point; the implementation is ``etchat/eval/etbench/compute_metrics.py``.
"""

from etchat.eval.etbench.compute_metrics import main

if __name__ == "__main__":
    main()
