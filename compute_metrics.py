"""E.T. Bench scoring: ``python compute_metrics.py <file-or-folder> [--subset]``.

A thin entry point; the implementation is ``etchat/eval/compute_metrics.py``.
"""

from etchat.eval.compute_metrics import main

if __name__ == "__main__":
    main()
