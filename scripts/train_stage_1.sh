#!/usr/bin/env bash
# Stage 1: align the frame compressor's projections with Phi-3 on image/video captions (docs/design.md §6).
# Usage: scripts/train_stage_1.sh [PHI3_PATH]
#
# Environment (defaults in brackets):
#   MODEL_PATH          base LLM, a folder or a Hub repo id [$1, else model_zoo/Phi-3-mini-4k-instruct, which
#                       without that folder is microsoft/Phi-3-mini-4k-instruct from the Hub]
#   VISION_TOWER_PATH   EVA-ViT-G weights [model_zoo/eva_vit_g.pth]
#   QFORMER_PATH        Q-Former weights [model_zoo/instruct_blip_vicuna7b_trimmed.pth]
#   ANNO_PATH           [data/llamavid/llava_558k_with_webvid.json]
#   IMAGE_PATH          [data/llava_pretrain/images]
#   VIDEO_PATH          [data/webvid/videos_compressed when it exists, else data/webvid/videos]
#   OUTPUT_DIR          [work_dirs/etchat-stage-1]
#   GLOBAL_BATCH        samples per optimizer step over all processes [256]
#   PER_DEVICE_BATCH    samples per process and forward pass [4]
#   and the shared ones of scripts/common.sh (processes, nodes, DTYPE, DeepSpeed config, EXTRA_ARGS, DRY_RUN, ...).
#
# Relative paths are relative to the repository root. A rerun resumes from the newest checkpoint in the output folder.

set -euo pipefail

MODEL_PATH=${1:-${MODEL_PATH:-model_zoo/Phi-3-mini-4k-instruct}}
VISION_TOWER_PATH=${VISION_TOWER_PATH:-model_zoo/eva_vit_g.pth}
QFORMER_PATH=${QFORMER_PATH:-model_zoo/instruct_blip_vicuna7b_trimmed.pth}
ANNO_PATH=${ANNO_PATH:-data/llamavid/llava_558k_with_webvid.json}
IMAGE_PATH=${IMAGE_PATH:-data/llava_pretrain/images}
OUTPUT_DIR=${OUTPUT_DIR:-work_dirs/etchat-stage-1}
GLOBAL_BATCH=${GLOBAL_BATCH:-256}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-4}

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
VIDEO_PATH=${VIDEO_PATH:-$(prefer_compressed data/webvid/videos)}

launch_training \
    --model_name_or_path "$MODEL_PATH" \
    --language_model phi3 \
    --conv_type plain \
    --fast_tokenizer True \
    --vision_tower eva_vit \
    --vision_processor clip_center_224 \
    --vision_output_layer -2 \
    --vision_output_token patch \
    --mm_projector qformer \
    --pretrain_vision_tower "$VISION_TOWER_PATH" \
    --pretrain_qformer "$QFORMER_PATH" \
    --anno_path "$ANNO_PATH" \
    --image_path "$IMAGE_PATH" \
    --video_path "$VIDEO_PATH" \
    --fps 1 \
    --tuning_mode projector \
    --use_matching False \
    --use_time_tag False \
    --bi_attention False \
    --alpha 2.0 \
    --num_train_epochs 1 \
    --output_dir "$OUTPUT_DIR" \
    --save_full_model True \
    --save_strategy steps \
    --save_steps 500 \
    --save_total_limit 1 \
    --learning_rate 1e-3 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --report_to tensorboard
