#!/usr/bin/env bash
# Stage 3: ET-Instruct-164K with <vid> matching: Q-Former attention, embeddings, heads + LoRA (SPEC 6).
# Usage: scripts/train_stage_3.sh [STAGE2_PATH]
#
# Environment (defaults in brackets):
#   MODEL_PATH          stage-2 output [$1, else work_dirs/etchat-stage-2]
#   ANNO_PATH           [data/et_instruct_164k/et_instruct_164k_vid.json]
#   VIDEO_PATH          [data/et_instruct_164k/videos]
#   OUTPUT_DIR          [work_dirs/etchat-stage-3]
#   GLOBAL_BATCH        samples per optimizer step over all processes [32]
#   PER_DEVICE_BATCH    samples per process and forward pass [1]
#   NPROC_PER_NODE      processes per node [number of visible GPUs; 1 without a GPU]
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   torchrun's multi-node settings [1, 0, 127.0.0.1, 29500]
#   PRECISION           fp16, bf16 or fp32 [fp16 with GPUs; fp32 on CPU, where gloo replaces nccl]
#   DEEPSPEED_CONFIG    [scripts/zero2.json]; zero2_offload / zero3 / zero3_offload.json are alternatives, and
#                       "none" trains with plain DDP
#   NUM_WORKERS         data loader processes per training process [4]
#   EXTRA_ARGS          more flags for etchat.train.train, appended last so they override the ones above, split on
#                       whitespace (e.g. "--max_steps 20 --save_steps 10 --report_to none")
#   SKIP_SETUP=1        use the active Python environment instead of sourcing scripts/setup_env.sh
#   DRY_RUN=1           print the command instead of running it
#
# Gradient accumulation = GLOBAL_BATCH / (NPROC_PER_NODE x NNODES x PER_DEVICE_BATCH), so the global batch stays the
# published one on any number of GPUs. Relative paths are relative to the repository root. A rerun resumes from the
# newest checkpoint in the output folder.

set -euo pipefail

MODEL_PATH=${1:-${MODEL_PATH:-work_dirs/etchat-stage-2}}
ANNO_PATH=${ANNO_PATH:-data/et_instruct_164k/et_instruct_164k_vid.json}
VIDEO_PATH=${VIDEO_PATH:-data/et_instruct_164k/videos}
OUTPUT_DIR=${OUTPUT_DIR:-work_dirs/etchat-stage-3}
GLOBAL_BATCH=${GLOBAL_BATCH:-32}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-1}

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${SKIP_SETUP:-0}" != "1" ]; then
    # shellcheck disable=SC1091
    . "$ROOT/scripts/setup_env.sh"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

NUM_GPUS=0
if [ -z "${NPROC_PER_NODE:-}" ] || [ -z "${PRECISION:-}" ]; then
    NUM_GPUS=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
fi
NPROC_PER_NODE=${NPROC_PER_NODE:-$(( NUM_GPUS > 0 ? NUM_GPUS : 1 ))}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
PRECISION=${PRECISION:-$([ "$NUM_GPUS" -gt 0 ] && echo fp16 || echo fp32)}
DEEPSPEED_CONFIG=${DEEPSPEED_CONFIG:-scripts/zero2.json}
NUM_WORKERS=${NUM_WORKERS:-4}

# Keep the published global batch on any number of processes: accumulate the difference.
WORLD_SIZE=$(( NPROC_PER_NODE * NNODES ))
if (( GLOBAL_BATCH % (WORLD_SIZE * PER_DEVICE_BATCH) != 0 )); then
    echo "GLOBAL_BATCH=$GLOBAL_BATCH is not a multiple of processes ($WORLD_SIZE) x PER_DEVICE_BATCH ($PER_DEVICE_BATCH)" >&2
    exit 1
fi
GRAD_ACCUM=$(( GLOBAL_BATCH / (WORLD_SIZE * PER_DEVICE_BATCH) ))

case "$PRECISION" in
    fp16) PRECISION_ARGS=(--fp16 True) ;;
    bf16) PRECISION_ARGS=(--bf16 True) ;;
    fp32) PRECISION_ARGS=() ;;
    *) echo "PRECISION must be fp16, bf16 or fp32, got '$PRECISION'" >&2; exit 1 ;;
esac

LAUNCHER=(torchrun --nnodes "$NNODES" --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR"
    --master_port "$MASTER_PORT" --nproc_per_node "$NPROC_PER_NODE" -m etchat.train.train)
COMMON_ARGS=(
    --per_device_train_batch_size "$PER_DEVICE_BATCH"
    --gradient_accumulation_steps "$GRAD_ACCUM"
    --dataloader_num_workers "$NUM_WORKERS"
    "${PRECISION_ARGS[@]}"
)
if [ "$DEEPSPEED_CONFIG" != "none" ]; then
    COMMON_ARGS+=(--deepspeed "$DEEPSPEED_CONFIG")
fi

run() {
    # EXTRA_ARGS is split on whitespace (no globbing); later flags override earlier ones.
    local extra=()
    read -r -a extra <<< "${EXTRA_ARGS:-}"
    local cmd=("${LAUNCHER[@]}" "$@" "${COMMON_ARGS[@]}" "${extra[@]}")
    echo "[$(basename "$0")] ${NPROC_PER_NODE} process(es) x ${NNODES} node(s), ${PER_DEVICE_BATCH} per device," \
        "accumulation ${GRAD_ACCUM} -> global batch ${GLOBAL_BATCH}, ${PRECISION}" >&2
    if [ "${DRY_RUN:-0}" = "1" ]; then
        printf '%q ' "${cmd[@]}"
        echo
    else
        "${cmd[@]}"
    fi
}

run \
    --model_name_or_path "$MODEL_PATH" \
    --language_model phi3 \
    --conv_type phi3 \
    --fast_tokenizer True \
    --vision_tower eva_vit \
    --vision_processor clip_center_224 \
    --vision_output_layer -2 \
    --vision_output_token patch \
    --mm_projector qformer \
    --anno_path "$ANNO_PATH" \
    --video_path "$VIDEO_PATH" \
    --fps 1 \
    --lora_enable True \
    --lora_lr 5e-5 \
    --tuning_mode attention \
    --use_matching True \
    --use_time_tag False \
    --bi_attention True \
    --alpha 2.0 \
    --min_video_len 5 \
    --max_video_len 350 \
    --max_num_words 200 \
    --num_train_epochs 1 \
    --output_dir "$OUTPUT_DIR" \
    --save_full_model True \
    --save_strategy steps \
    --save_steps 500 \
    --save_total_limit 1 \
    --learning_rate 2e-5 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --report_to tensorboard
