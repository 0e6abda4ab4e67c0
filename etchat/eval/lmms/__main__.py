"""Print the folder of the project's lmms-eval task configs, for ``--include_path``:

    python -m lmms_eval --model etchat --model_args pretrained=PolyU-ChenLab/ETChat-Phi3-Mini-Stage-3 \\
        --tasks etbench --include_path $(python -m etchat.eval.lmms)
"""

import argparse

from etchat.eval.lmms import TASKS_DIR

argparse.ArgumentParser(
    prog="python -m etchat.eval.lmms", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
).parse_args()
print(TASKS_DIR)
