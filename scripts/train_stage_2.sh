#!/usr/bin/env bash
# Stage 2: instruction tuning on image/video/text conversations: the whole Q-Former + LoRA (docs/design.md §6).
# Usage: scripts/train_stage_2.sh [STAGE1_PATH]
#
# Environment (defaults in brackets):
#   MODEL_PATH          stage-1 output [$1, else work_dirs/etchat-stage-1]
#   ANNO_PATH           [data/llamavid/llava_v1_5_mix665k_with_video_chatgpt.json]
#   IMAGE_PATH          [data/llava_instruct]
#   VIDEO_PATH          [data/video_chatgpt_compressed when it exists, else data/video_chatgpt]
#   OUTPUT_DIR          [work_dirs/etchat-stage-2]
#   GLOBAL_BATCH        samples per optimizer step over all processes [128]
#   PER_DEVICE_BATCH    samples per process and forward pass [1]
#   and the shared ones of scripts/common.sh (processes, nodes, DTYPE, DeepSpeed config, EXTRA_ARGS, DRY_RUN, ...).
#
# Relative paths are relative to the repository root. A rerun resumes from the newest checkpoint in the output folder.

set -euo pipefail

MODEL_PATH=${1:-${MODEL_PATH:-work_dirs/etchat-stage-1}}
ANNO_PATH=${ANNO_PATH:-data/llamavid/llava_v1_5_mix665k_with_video_chatgpt.json}
IMAGE_PATH=${IMAGE_PATH:-data/llava_instruct}
OUTPUT_DIR=${OUTPUT_DIR:-work_dirs/etchat-stage-2}
GLOBAL_BATCH=${GLOBAL_BATCH:-128}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-1}

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
VIDEO_PATH=${VIDEO_PATH:-$(prefer_compressed data/video_chatgpt)}

launch_training \
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
    --image_path "$IMAGE_PATH" \
    --video_path "$VIDEO_PATH" \
    --image_pad_to_square True \
    --group_by_modality True \
    --fps 1 \
    --lora_enable True \
    --lora_lr 2e-4 \
    --tuning_mode qformer \
    --use_matching False \
    --use_time_tag False \
    --bi_attention False \
    --alpha 2.0 \
    --max_video_len 350 \
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
