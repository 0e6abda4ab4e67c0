#!/usr/bin/env bash
# ActivityNet Captions dense video captioning inference, one process per visible GPU (one CPU process when there
# is none), then scoring against the annotation file (score against val_1 + val_2 with
# `python -m etchat.eval.dvc <pred_path> --references val_1.json val_2.json`).
#
#   scripts/inference_activitynet.sh [<checkpoint>] [extra etchat.eval.dvc.infer options]
#
# checkpoint: default work_dirs/etchat-stage-3. Predictions go to <checkpoint>/activitynet_captions/dvc_{i}.json
# (the scorer adds dvc_submission.json).
# Environment: ANNO_PATH (default data/activitynet/captions/val_1.json),
# VIDEO_PATH (data/activitynet/videos), PRED_PATH (<checkpoint>/activitynet_captions), and the shared ones of scripts/common.sh
# (CUDA_VISIBLE_DEVICES, SKIP_METRICS, SKIP_SETUP, DRY_RUN). A rerun resumes: finished samples are skipped.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

infer_and_score etchat.eval.dvc activitynet_captions data/activitynet/captions/val_1.json data/activitynet/videos "$@"
