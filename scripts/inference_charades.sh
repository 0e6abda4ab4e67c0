#!/usr/bin/env bash
# Charades-STA inference, one process per visible GPU (one CPU process when there is none) on each node, then scoring.
#
#   scripts/inference_charades.sh [<checkpoint>] [extra etchat.eval.charades.infer options, e.g. --batch_size 4]
#
# checkpoint: a folder or a Hub repo id (--model_revision picks its commit), default work_dirs/etchat-stage-3.
# Predictions go to <checkpoint>/charades_sta/charades_sta_{i}.json (for a Hub repo org/name:
# work_dirs/name/charades_sta/).
# Environment: ANNO_PATH (default data/charades/charades_sta_test.txt), VIDEO_PATH (data/charades/videos_compressed
# when it exists, else data/charades/videos), PRED_PATH (<checkpoint>/charades_sta), and the shared ones of
# scripts/common.sh (CUDA_VISIBLE_DEVICES, NPROC_PER_NODE, NNODES, NODE_RANK, SKIP_METRICS, SKIP_SETUP, DRY_RUN). A
# rerun resumes: finished samples are skipped.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

infer_and_score etchat.eval.charades charades_sta data/charades/charades_sta_test.txt data/charades/videos "$@"
