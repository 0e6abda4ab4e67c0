#!/usr/bin/env bash
# Charades-STA inference, one process per visible GPU (one CPU process when there is none), then scoring.
#
#   scripts/inference_charades.sh [<checkpoint>] [extra etchat.eval.infer_charades options, e.g. --batch_size 4]
#
# checkpoint: default work_dirs/etchat-stage-3. Predictions go to <checkpoint>/charades_sta/charades_sta_{i}.json.
# Environment: ANNO_PATH (default data/charades/charades_sta_test.txt), VIDEO_PATH (data/charades/videos),
# PRED_PATH (<checkpoint>/charades_sta), CUDA_VISIBLE_DEVICES (which GPUs; "" or -1: CPU), PYTHON (interpreter; when
# unset, the project venv is set up / activated), SKIP_METRICS=1 (no scoring).
# A rerun resumes: finished samples are skipped.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
# Start `python -m <module> <args>` once per visible GPU as shard i of k (GPU i), or once on the CPU; wait for all.
run_shards() {
    local module="$1"
    shift
    local gpus=() pids=() failed=0 i
    if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
        IFS=',' read -ra gpus <<< "$CUDA_VISIBLE_DEVICES"
        # "" or a negative index hides every GPU.
        if [ "${#gpus[@]}" -eq 0 ] || [[ "${gpus[0]}" == -* ]]; then gpus=(); fi
    elif command -v nvidia-smi > /dev/null 2>&1; then
        local count
        count="$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)"
        if [ "$count" -gt 0 ]; then mapfile -t gpus < <(seq 0 $((count - 1))); fi
    fi
    if [ "${#gpus[@]}" -eq 0 ]; then
        echo "[inference] no GPU visible: one process on the CPU" >&2
        "$PYTHON" -m "$module" "$@" --device cpu
        return
    fi
    echo "[inference] ${#gpus[@]} GPU(s): ${gpus[*]}" >&2
    trap 'kill "${pids[@]}" 2> /dev/null || true' INT TERM
    for i in "${!gpus[@]}"; do
        CUDA_VISIBLE_DEVICES="${gpus[$i]}" "$PYTHON" -m "$module" "$@" \
            --chunk "${#gpus[@]}" --index "$i" --device cuda &
        pids+=("$!")
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { echo "[inference] shard $i (GPU ${gpus[$i]}) failed" >&2; failed=1; }
    done
    trap - INT TERM
    return "$failed"
}

if [ -z "${PYTHON:-}" ]; then
    # shellcheck disable=SC1091
    . "$ROOT/scripts/setup_env.sh"
    PYTHON=python
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

CHECKPOINT="work_dirs/etchat-stage-3"
if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
    CHECKPOINT="$1"
    shift
fi
ANNO_PATH="${ANNO_PATH:-data/charades/charades_sta_test.txt}"
VIDEO_PATH="${VIDEO_PATH:-data/charades/videos}"
PRED_PATH="${PRED_PATH:-$CHECKPOINT/charades_sta}"

run_shards etchat.eval.infer_charades \
    --anno_path "$ANNO_PATH" --data_path "$VIDEO_PATH" --pred_path "$PRED_PATH" --model_path "$CHECKPOINT" "$@"

if [ "${SKIP_METRICS:-0}" != "1" ]; then
    "$PYTHON" -m etchat.eval.eval_grounding "$PRED_PATH"
fi
