#!/usr/bin/env bash
# QVHighlights inference (moment retrieval and highlight detection), one process per visible GPU (one CPU process
# when there is none), then scoring.
#
#   scripts/inference_qvhighlights.sh [<checkpoint>] [extra etchat.eval.qvhighlights.infer options]
#
# checkpoint: default work_dirs/etchat-stage-3. Predictions go to <checkpoint>/qvhighlights/qvhighlights_{i}.json
# (the scorer adds qvhighlights_submission.jsonl).
# Environment: ANNO_PATH (default data/qvhighlights/highlight_val_release.jsonl),
# VIDEO_PATH (data/qvhighlights/videos), PRED_PATH (<checkpoint>/qvhighlights), and the shared ones of scripts/common.sh
# (CUDA_VISIBLE_DEVICES, SKIP_METRICS, SKIP_SETUP, DRY_RUN). A rerun resumes: finished samples are skipped.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

infer_and_score etchat.eval.qvhighlights qvhighlights data/qvhighlights/highlight_val_release.jsonl data/qvhighlights/videos "$@"
