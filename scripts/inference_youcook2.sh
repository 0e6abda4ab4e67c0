#!/usr/bin/env bash
# YouCook2 dense video captioning inference on the validation videos, one process per visible GPU (one CPU process
# when there is none), then scoring.
#
#   scripts/inference_youcook2.sh [<checkpoint>] [extra etchat.eval.dvc.infer options]
#
# checkpoint: default work_dirs/etchat-stage-3. Predictions go to <checkpoint>/youcook2/dvc_{i}.json
# (the scorer adds dvc_submission.json).
# Environment: ANNO_PATH (default data/youcook2/youcookii_annotations_trainval.json),
# VIDEO_PATH (data/youcook2/videos), PRED_PATH (<checkpoint>/youcook2), and the shared ones of scripts/common.sh
# (CUDA_VISIBLE_DEVICES, SKIP_METRICS, SKIP_SETUP, DRY_RUN). A rerun resumes: finished samples are skipped.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

infer_and_score etchat.eval.dvc youcook2 data/youcook2/youcookii_annotations_trainval.json data/youcook2/videos "$@"
