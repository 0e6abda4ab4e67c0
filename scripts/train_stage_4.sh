#!/usr/bin/env bash
# Stage 4: GRPO of the stage-3 model, frames of the <vid> tokens sampled and rewarded (docs/design.md §20).
# Usage: scripts/train_stage_4.sh [STAGE3_PATH]
#
# Environment (defaults in brackets):
#   MODEL_PATH          stage-3 output [$1, else work_dirs/etchat-stage-3]
#   ANNO_PATH           [data/et_instruct_164k/et_instruct_164k_vid.json]; the samples of tasks with a reward are asked
#   VIDEO_PATH          [data/et_instruct_164k/videos_compressed when it exists, else data/et_instruct_164k/videos]
#   OUTPUT_DIR          [work_dirs/etchat-stage-4]
#   GLOBAL_BATCH        prompts per optimizer step over all processes [16]
#   PER_DEVICE_BATCH    prompts per process and step of the accumulation [1]; each is answered NUM_GENERATIONS times
#   NUM_GENERATIONS     answers sampled per prompt [8]
#   MAX_STEPS           optimizer steps [500]
#   and the shared ones of scripts/common.sh (processes, nodes, DTYPE, DeepSpeed config, EXTRA_ARGS, DRY_RUN, ...).
# A model trained on timestamps as text: ANNO_PATH=.../et_instruct_164k_txt.json EXTRA_ARGS="--use_matching False".
#
# Relative paths are relative to the repository root. A rerun resumes from the newest checkpoint in the output folder.

set -euo pipefail

MODEL_PATH=${1:-${MODEL_PATH:-work_dirs/etchat-stage-3}}
ANNO_PATH=${ANNO_PATH:-data/et_instruct_164k/et_instruct_164k_vid.json}
OUTPUT_DIR=${OUTPUT_DIR:-work_dirs/etchat-stage-4}
GLOBAL_BATCH=${GLOBAL_BATCH:-16}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-1}
NUM_GENERATIONS=${NUM_GENERATIONS:-8}
MAX_STEPS=${MAX_STEPS:-500}

# shellcheck source=scripts/common.sh
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
VIDEO_PATH=${VIDEO_PATH:-$(prefer_compressed data/et_instruct_164k/videos)}

TRAIN_MODULE=etchat.train.train_grpo launch_training \
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
    --lora_lr 5e-6 \
    --tuning_mode attention \
    --use_matching True \
    --use_time_tag False \
    --bi_attention True \
    --alpha 2.0 \
    --min_video_len 5 \
    --max_video_len 350 \
    --max_num_words 200 \
    --num_generations "$NUM_GENERATIONS" \
    --max_new_tokens 512 \
    --temperature 1.0 \
    --frame_temperature 1.0 \
    --beta 0.04 \
    --epsilon 0.2 \
    --max_steps "$MAX_STEPS" \
    --output_dir "$OUTPUT_DIR" \
    --save_full_model True \
    --save_strategy steps \
    --save_steps 50 \
    --save_total_limit 1 \
    --learning_rate 1e-6 \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --report_to tensorboard
