#!/usr/bin/env bash
# E.T. Bench inference, one process per visible GPU (one CPU process when there is none) on each node, then scoring.
#
#   scripts/inference.sh [<checkpoint>] [extra etchat.eval.etbench.infer options, e.g. --batch_size 4 --save_sims]
#
# checkpoint: a folder or a Hub repo id (PolyU-ChenLab/ETChat-Phi3-Mini-Stage-3; --model_revision picks its commit),
# default work_dirs/etchat-stage-3. Predictions go to <checkpoint>/etbench/etbench_{i}.json (for a Hub repo
# org/name: work_dirs/name/etbench/).
# Environment: ANNO_PATH (default data/etbench/annotations/vid; annotations/txt for a model that writes times as
# text), VIDEO_PATH (data/etbench/videos_compressed when it exists, as published, else data/etbench/videos), PRED_PATH
# (<checkpoint>/etbench), and the shared ones of scripts/common.sh (CUDA_VISIBLE_DEVICES, NPROC_PER_NODE, NNODES,
# NODE_RANK, SKIP_METRICS, SKIP_SETUP, DRY_RUN). A rerun resumes: finished samples are skipped.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"

infer_and_score etchat.eval.etbench etbench data/etbench/annotations/vid data/etbench/videos "$@"
