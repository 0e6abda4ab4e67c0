#!/usr/bin/env bash
# E.T. Chat end to end on a CPU, no downloads: synthetic videos -> tiny base weights in the real formats ->
# train_stage_1/2/3.sh -> inference.sh (E.T. Bench), inference_qvhighlights.sh and inference_activitynet.sh (dense
# captioning) on the test split -> their scores, plus the untrained model and a random-span baseline.
#
# Usage: bash scripts/quickstart.sh [--print_settings]
#   --print_settings   print the settings this run would use (JSON) and exit
# Environment (defaults in brackets):
#   QS_DIR        where everything goes [work_dirs/quickstart]
#   QS_SEED       data and model seed [0]
#   QS_TRAIN_VIDEOS / QS_TEST_VIDEOS / QS_IMAGES   synthetic data sizes [200 / 40 / 200]
#   QS_MIN_LEN / QS_MAX_LEN   video lengths in seconds [16 / 40]
#   QS_FRAME_SIZE  frame side in pixels [112: the tiny encoder's input, so frames are decoded as stored]
#   QS_TASKS      synthetic tasks, trained in stage 3 and tested [tvg,tal,vhd,dvc,qvh_mr,qvh_hd,densecap: those
#                 answered with <vid> times; the last three ask the QVHighlights and dense-captioning benchmarks'
#                 questions. The multiple-choice rar,eca,rvq can be added; a toy model does not learn them]
#   QS_STAGE3_TASKS   the tasks stage 3 trains on [QS_TASKS]
#   QS_STAGE{1,2,3}_EPOCHS   epochs per stage [1 / 1 / 3]
#   QS_THREADS    torch threads per process [2, whatever the machine or an inherited OMP_NUM_THREADS: the trained
#                 weights depend on the thread count, so the default is fixed to give the README's numbers]
# Each step is skipped when its output exists, so a rerun resumes where the last one stopped (training itself
# resumes from its newest checkpoint). $QS_DIR/quickstart.json records the settings; a rerun with other ones stops.
set -euo pipefail
# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
export SKIP_SETUP=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-}"   # the quickstart is a CPU job
# Not `nproc`: it follows an inherited OMP_NUM_THREADS, and the weights with it (docs/benchmarks.md, quickstart).
export OMP_NUM_THREADS="${QS_THREADS:-2}"
# Data-loader workers share the few cores with the training process: spinning OpenMP threads would starve them.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

QS_DIR="${QS_DIR:-work_dirs/quickstart}"
SEED="${QS_SEED:-0}"
TRAIN_VIDEOS="${QS_TRAIN_VIDEOS:-200}"
TEST_VIDEOS="${QS_TEST_VIDEOS:-40}"
IMAGES="${QS_IMAGES:-200}"
MIN_LEN="${QS_MIN_LEN:-16}"
MAX_LEN="${QS_MAX_LEN:-40}"
FRAME_SIZE="${QS_FRAME_SIZE:-112}"
TASKS="${QS_TASKS:-tvg,tal,vhd,dvc,qvh_mr,qvh_hd,densecap}"
STAGE3_TASKS="${QS_STAGE3_TASKS:-$TASKS}"
EPOCHS=("${QS_STAGE1_EPOCHS:-1}" "${QS_STAGE2_EPOCHS:-1}" "${QS_STAGE3_EPOCHS:-3}")
DATA="$QS_DIR/data"
BASE="$QS_DIR/base"
START=$(date +%s)

# What the trained weights and the table depend on. The CPU's kernel level (torch picks AVX512, AVX2 or none by the
# machine) and the thread count change the float sums, so they are part of it.
settings_json() {
    python - "$SEED" "$OMP_NUM_THREADS" "$TRAIN_VIDEOS" "$TEST_VIDEOS" "$IMAGES" "$MIN_LEN" "$MAX_LEN" "$FRAME_SIZE" \
        "$TASKS" "$STAGE3_TASKS" "$(IFS=,; echo "${EPOCHS[*]}")" << 'PY'
import json, sys
import torch
keys = ("seed", "threads", "train_videos", "test_videos", "images", "min_len", "max_len", "frame_size", "tasks",
        "stage3_tasks", "epochs")
settings = dict(zip(keys, sys.argv[1:]))
settings.update(torch=torch.__version__, cpu_kernels=torch.backends.cpu.get_cpu_capability())
print(json.dumps(settings, indent=1))
PY
}
SETTINGS=$(settings_json)
if [ "${1:-}" = "--print_settings" ]; then
    echo "$SETTINGS"
    exit 0
fi
mkdir -p "$QS_DIR"
if [ -f "$QS_DIR/quickstart.json" ] && [ "$(cat "$QS_DIR/quickstart.json")" != "$SETTINGS" ]; then
    echo "[quickstart] $QS_DIR holds a run made with other settings (its quickstart.json; now:" >&2
    echo "$SETTINGS) - use another QS_DIR, or delete that one" >&2
    exit 1
fi
echo "$SETTINGS" > "$QS_DIR/quickstart.json"

# Wall time since the start and CPU time of everything run so far (the latter does not grow when other jobs share the
# cores, so it compares runs on a busy machine).
cpu_seconds() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%d", ($16 + $17) / hz }' "/proc/$$/stat" 2> /dev/null || echo "?"; }
step() { printf '\n\033[1m[quickstart %4ds, cpu %4ds] %s\033[0m\n' "$(( $(date +%s) - START ))" "$(cpu_seconds)" "$*"; }

echo "[quickstart] settings ($QS_DIR/quickstart.json): $(echo "$SETTINGS" | tr -d '\n')"
step "1/6 synthetic data -> $DATA"
python -m etchat.toy.synthetic --output_dir "$DATA" --seed "$SEED" --tasks "$TASKS" \
    --num_train_videos "$TRAIN_VIDEOS" --num_test_videos "$TEST_VIDEOS" --num_images "$IMAGES" \
    --min_len "$MIN_LEN" --max_len "$MAX_LEN" --size "$FRAME_SIZE"

step "2/6 tiny base weights (Phi-3 folder, eva_vit_g.pth, instruct_blip .pth) -> $BASE"
if [ ! -f "$BASE/tiny.json" ]; then
    python -m etchat.toy.tiny "$BASE" --corpus "$DATA" --seed "$SEED" --preset quickstart
fi
TINY_ARGS=$(python -m etchat.toy.tiny "$BASE" --print_args)

# Tiny-model settings shared by the three stages: single CPU process without DeepSpeed, small batches, a learning
# rate and tuning mode a toy model learns with in minutes (the published ones are for Phi-3-mini on 8 GPUs).
export NPROC_PER_NODE=1 DEEPSPEED_CONFIG=none DTYPE=float32 WORKERS=2 PER_DEVICE_BATCH=8 GLOBAL_BATCH=8
# The tiny geometry and its frame size go to every stage (the stage scripts name the published ones).
COMMON="$TINY_ARGS --report_to none --logging_steps 20 --save_steps 200 --save_total_limit 1 --gradient_checkpointing False --seed $SEED"

# A step is done when its output is there and whole: a killed save or scoring run leaves one that is not.
whole() { python -c "import sys; from etchat.io import file_problem; from pathlib import Path; sys.exit(any(not Path(p).is_file() or file_problem(Path(p)) for p in sys.argv[1:]))" "$@"; }
done_stage() { whole "$1/config.json" "$1/model.safetensors"; }

step "3/6 stage 1: captions, projector only"
if ! done_stage "$QS_DIR/stage-1"; then
    MODEL_PATH="$BASE/Phi-3-mini-4k-instruct" VISION_TOWER_PATH="$BASE/eva_vit_g.pth" \
    QFORMER_PATH="$BASE/instruct_blip_vicuna7b_trimmed.pth" ANNO_PATH="$DATA/stage1.json" IMAGE_PATH="$DATA" \
    VIDEO_PATH="$DATA" OUTPUT_DIR="$QS_DIR/stage-1" \
    EXTRA_ARGS="$COMMON --num_train_epochs ${EPOCHS[0]} --learning_rate 2e-3" \
        bash scripts/train_stage_1.sh
fi

step "4/6 stage 2: QA, Q-Former + LLM"
if ! done_stage "$QS_DIR/stage-2"; then
    ANNO_PATH="$DATA/stage2.json" IMAGE_PATH="$DATA" VIDEO_PATH="$DATA" OUTPUT_DIR="$QS_DIR/stage-2" \
    EXTRA_ARGS="$COMMON --num_train_epochs ${EPOCHS[1]} --learning_rate 1e-3 --lora_enable False --tuning_mode llm --group_by_modality False" \
        bash scripts/train_stage_2.sh "$QS_DIR/stage-1"
fi

step "5/6 stage 3: <vid> matching on ET-Instruct-style samples"
# The grounding tasks only: the multiple-choice ones train no <vid> matching and take LM capacity the toy model needs.
# Each video serves several samples, so the data loaders keep decoded videos across steps and epochs.
STAGE3_ARGS="--num_train_epochs ${EPOCHS[2]} --learning_rate 2e-3 --lora_enable False --tuning_mode llm"
STAGE3_ARGS+=" --tasks $STAGE3_TASKS"
STAGE3_ARGS+=" --video_cache_size $TRAIN_VIDEOS --dataloader_persistent_workers True"
if ! done_stage "$QS_DIR/stage-3"; then
    ANNO_PATH="$DATA/stage3.json" VIDEO_PATH="$DATA" OUTPUT_DIR="$QS_DIR/stage-3" \
    EXTRA_ARGS="$COMMON $STAGE3_ARGS" bash scripts/train_stage_3.sh "$QS_DIR/stage-2"
fi

step "6/6 inference on the test split and scoring (trained model, untrained model, random spans)"
INFER_ARGS=(--batch_size 16 --workers 2 --max_new_tokens 96 --seed "$SEED")
QVH_ANNO="$DATA/annotations/qvhighlights/synthetic_test.jsonl"
DVC_ANNO="$DATA/annotations/dvc/synthetic_test.json"
# metrics.json is written last (and removed when scoring starts), so a folder with a whole one is complete;
# otherwise inference resumes, then scores.
scored() { whole "$1/metrics.json"; }
# E.T. Bench, QVHighlights and dense captioning of the test split by the checkpoint $1 (more E.T. Bench options: $2...).
infer_benchmarks() {
    step "6/6 $(basename "$1"): E.T. Bench"
    if ! scored "$1/etbench"; then
        ANNO_PATH="$DATA/annotations/vid" VIDEO_PATH="$DATA" bash scripts/inference.sh "$1" "${INFER_ARGS[@]}" "${@:2}"
    fi
    step "6/6 $(basename "$1"): QVHighlights"
    if ! scored "$1/qvhighlights"; then
        ANNO_PATH="$QVH_ANNO" VIDEO_PATH="$DATA/videos/test" bash scripts/inference_qvhighlights.sh "$1" "${INFER_ARGS[@]}"
    fi
    step "6/6 $(basename "$1"): dense captioning"
    if ! scored "$1/dvc"; then
        ANNO_PATH="$DVC_ANNO" VIDEO_PATH="$DATA/videos/test" PRED_PATH="$1/dvc" \
            bash scripts/inference_activitynet.sh "$1" "${INFER_ARGS[@]}"
    fi
}
infer_benchmarks "$QS_DIR/stage-3" --save_sims --plot_samples 6  # timeline plots of the trained model
if ! done_stage "$QS_DIR/untrained"; then
    python -m etchat.toy.tiny "$BASE" --save_untrained "$QS_DIR/untrained"
fi
infer_benchmarks "$QS_DIR/untrained"
step "6/6 random spans"
if ! scored "$QS_DIR/random/etbench"; then
    python -m etchat.toy.baselines random_spans "$DATA/annotations/vid" "$QS_DIR/random/etbench" --seed "$SEED"
    python -m etchat.eval.etbench "$QS_DIR/random/etbench" > /dev/null
fi
if ! scored "$QS_DIR/random/qvhighlights"; then
    python -m etchat.toy.baselines random_spans "$QVH_ANNO" "$QS_DIR/random/qvhighlights" --benchmark qvhighlights \
        --seed "$SEED"
    python -m etchat.eval.qvhighlights "$QS_DIR/random/qvhighlights" > /dev/null
fi
if ! scored "$QS_DIR/random/dvc"; then
    python -m etchat.toy.baselines random_spans "$DVC_ANNO" "$QS_DIR/random/dvc" --benchmark dvc --seed "$SEED"
    python -m etchat.eval.dvc "$QS_DIR/random/dvc" > /dev/null
fi

step "summary"
python -m etchat.toy.baselines summary trained="$QS_DIR/stage-3" untrained="$QS_DIR/untrained" random="$QS_DIR/random"
echo "Timeline plots of some test samples: $QS_DIR/stage-3/etbench/plots/"
step "report"
python -m etchat.eval.report trained="$QS_DIR/stage-3" untrained="$QS_DIR/untrained" random="$QS_DIR/random" \
    --output_dir "$QS_DIR/report"
echo "Report (placement among published results, 95% intervals, protocol cards, parse audit): $QS_DIR/report/report.md"
echo "Total time: $(( $(date +%s) - START )) s"
