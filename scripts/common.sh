# Sourced by the launchers in scripts/: the environment, the torchrun arithmetic of training, and the sharding of
# inference. Not meant to be run on its own.
#
# Environment shared by every launcher (defaults in brackets):
#   SKIP_SETUP=1        use the active Python environment instead of setting up / activating .venv
#   DRY_RUN=1           print the command instead of running it
#
# Training (train_stage_{1,2,3}.sh):
#   GLOBAL_BATCH        samples per optimizer step over all processes [the stage's published value]
#   PER_DEVICE_BATCH    samples per process and forward pass [the stage's published value]
#   NPROC_PER_NODE      processes per node [number of visible GPUs; 1 without a GPU]
#   NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT   torchrun's multi-node settings [1, 0, 127.0.0.1, 29500; on one
#                       node a free port when 29500 is taken]
#   DTYPE               float16, bfloat16 or float32 [float16 with GPUs; float32 on CPU, where gloo replaces nccl]
#   DEEPSPEED_CONFIG    [scripts/zero2.json]; zero2_offload / zero3 / zero3_offload.json are alternatives, and
#                       "none" trains with plain DDP
#   NUM_WORKERS         data loader processes per training process [4]
#   EXTRA_ARGS          more flags for etchat.train.train, appended last so they override the stage's, split on
#                       whitespace (e.g. "--max_steps 20 --save_steps 10 --report_to none"); the published
#                       --per_device_train_batch_size and --gradient_accumulation_steps there enter the arithmetic
#   Gradient accumulation = GLOBAL_BATCH / (NPROC_PER_NODE x NNODES x PER_DEVICE_BATCH), so the global batch stays the
#   published one on any number of GPUs; the line printed before the run gives the real one.
#
# Inference (inference.sh, inference_charades.sh):
#   CUDA_VISIBLE_DEVICES  which GPUs get a shard each ("" or -1: the CPU)
#   NPROC_PER_NODE        shards (processes) on this node [number of visible GPUs, round-robin over them; 1 on CPU]
#   NNODES, NODE_RANK     torchrun-style nodes [1, 0]: shards = NNODES x NPROC_PER_NODE, node r runs the global
#                         indices r x NPROC_PER_NODE ... (r + 1) x NPROC_PER_NODE - 1. Every node must see the same
#                         PRED_PATH (a shared file system); the node that completes the set of shards scores it (with
#                         the scorer's --once, so that one process scores when two nodes finish together), and a
#                         rerun on any node resumes its shards.
#   SKIP_METRICS=1        no scoring after inference
#   Default video folder: <folder>_compressed (e.g. data/etbench/videos_compressed, made by
#   `python -m etchat.data.compress_videos`) when it exists, else <folder>; VIDEO_PATH overrides both.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [ "${SKIP_SETUP:-0}" != "1" ]; then
    # shellcheck disable=SC1091
    . "$ROOT/scripts/setup_env.sh"
fi
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"

# Print the command (DRY_RUN=1) or run it. The line is printed in one write, so that the shards started in the
# background cannot interleave their lines.
run_or_print() {
    if [ "${DRY_RUN:-0}" = "1" ]; then
        printf '%s\n' "$(printf '%q ' "$@")"
    else
        "$@"
    fi
}

# The value of flag $1 in the words that follow (--flag VALUE or --flag=VALUE; the last one wins), or nothing.
flag_value() {
    local flag="$1" value="" previous="" word
    shift
    for word in "$@"; do
        if [ "$previous" = "$flag" ]; then value="$word"; fi
        if [[ "$word" == "$flag="* ]]; then value="${word#*=}"; fi
        previous="$word"
    done
    printf '%s' "$value"
}

# A free TCP port for a single-node rendezvous: MASTER_PORT's default 29500 when it is free, else one the system
# picks (another run, or another program, may hold 29500 on a shared host).
free_master_port() {
    python - << 'PY'
import socket

def free(port):
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return None
        return s.getsockname()[1]

print(free(29500) or free(0))
PY
}

# torchrun -m etchat.train.train <stage flags> <batch, precision and DeepSpeed flags> <EXTRA_ARGS>.
# The published scripts' flags in EXTRA_ARGS are honoured in the batch arithmetic: --per_device_train_batch_size
# replaces PER_DEVICE_BATCH (the accumulation is recomputed to keep GLOBAL_BATCH), --gradient_accumulation_steps
# replaces the computed accumulation (the global batch is then what it gives, printed as such).
launch_training() {
    local num_gpus=0
    if [ -z "${NPROC_PER_NODE:-}" ] || [ -z "${DTYPE:-}" ]; then
        num_gpus=$(python -c "import torch; print(torch.cuda.device_count())" 2> /dev/null || echo 0)
    fi
    local nproc=${NPROC_PER_NODE:-$((num_gpus > 0 ? num_gpus : 1))}
    local nnodes=${NNODES:-1}
    local dtype=${DTYPE:-$([ "$num_gpus" -gt 0 ] && echo float16 || echo float32)}
    local world_size=$((nproc * nnodes))
    local extra=()
    read -r -a extra <<< "${EXTRA_ARGS:-}"  # split on whitespace (no globbing); later flags override earlier ones
    local per_device grad_accum global_batch
    per_device=$(flag_value --per_device_train_batch_size "${extra[@]}")
    per_device=${per_device:-$PER_DEVICE_BATCH}
    grad_accum=$(flag_value --gradient_accumulation_steps "${extra[@]}")
    if ! [[ "$per_device" =~ ^[1-9][0-9]*$ ]] || ! [[ "${grad_accum:-1}" =~ ^[1-9][0-9]*$ ]]; then
        echo "per-device batch ($per_device) and accumulation (${grad_accum:-computed}) must be positive integers" >&2
        return 1
    fi
    if [ -z "$grad_accum" ]; then
        if ((GLOBAL_BATCH % (world_size * per_device) != 0)); then
            echo "GLOBAL_BATCH=$GLOBAL_BATCH is not a multiple of processes ($world_size) x per-device batch" \
                "($per_device): set GLOBAL_BATCH, or --gradient_accumulation_steps in EXTRA_ARGS" >&2
            return 1
        fi
        grad_accum=$((GLOBAL_BATCH / (world_size * per_device)))
    fi
    global_batch=$((world_size * per_device * grad_accum))
    local note=""
    if [ "$global_batch" -ne "$GLOBAL_BATCH" ]; then note=" (not the stage's $GLOBAL_BATCH)"; fi
    local precision=()
    case "$dtype" in
        float16) precision=(--fp16 True) ;;
        bfloat16) precision=(--bf16 True) ;;
        float32) ;;
        *) echo "DTYPE must be float16, bfloat16 or float32, got '$dtype'" >&2; return 1 ;;
    esac
    local deepspeed=()
    local config=${DEEPSPEED_CONFIG:-scripts/zero2.json}
    if [ "$config" != "none" ]; then deepspeed=(--deepspeed "$config"); fi
    local port=${MASTER_PORT:-}
    if [ -z "$port" ]; then
        if [ "$nnodes" -eq 1 ]; then port=$(free_master_port); else port=29500; fi
    fi
    echo "[$(basename "$0")] $nproc process(es) x $nnodes node(s), $per_device per device," \
        "accumulation $grad_accum -> global batch $global_batch$note, $dtype" >&2
    run_or_print torchrun --nnodes "$nnodes" --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}" \
        --master_port "$port" --nproc_per_node "$nproc" -m etchat.train.train "$@" \
        --per_device_train_batch_size "$per_device" --gradient_accumulation_steps "$grad_accum" \
        --dataloader_num_workers "${NUM_WORKERS:-4}" "${precision[@]}" "${deepspeed[@]}" "${extra[@]}"
}

# The visible GPUs, one per line (none when CUDA_VISIBLE_DEVICES is "" or negative, or no GPU is found).
visible_gpus() {
    local gpus=()
    if [ -n "${CUDA_VISIBLE_DEVICES+set}" ]; then
        IFS=',' read -ra gpus <<< "$CUDA_VISIBLE_DEVICES"
        if [ "${#gpus[@]}" -eq 0 ] || [[ "${gpus[0]}" == -* ]]; then gpus=(); fi
    elif command -v nvidia-smi > /dev/null 2>&1; then
        local count
        count="$(nvidia-smi -L 2> /dev/null | grep -c '^GPU' || true)"
        if [ "$count" -gt 0 ]; then mapfile -t gpus < <(seq 0 $((count - 1))); fi
    fi
    if [ "${#gpus[@]}" -gt 0 ]; then printf '%s\n' "${gpus[@]}"; fi
}

# <folder>_compressed when that folder exists (E.T. Bench's compressed videos), else <folder>.
prefer_compressed() {
    local folder="${1%/}"
    if [ -d "${folder}_compressed" ]; then
        echo "[$(basename "$0")] reading videos from ${folder}_compressed" >&2
        echo "${folder}_compressed"
    else
        echo "$folder"
    fi
}

# Shards on this node: NPROC_PER_NODE [visible GPUs; 1 without]; all shards: that times NNODES.
local_shards() {
    local num_gpus="$1"
    echo "${NPROC_PER_NODE:-$((num_gpus > 0 ? num_gpus : 1))}"
}

# Start `python -m <module> <args>` for each shard of this node (global index NODE_RANK x NPROC_PER_NODE + i, GPU i
# round-robin over the visible ones, else the CPU); wait for all. One shard in all runs without --chunk / --index.
run_shards() {
    local module="$1"
    shift
    local gpus=() pids=() failed=0 i nproc nnodes=${NNODES:-1} node_rank=${NODE_RANK:-0}
    mapfile -t gpus < <(visible_gpus)
    nproc=$(local_shards "${#gpus[@]}")
    if ((nproc < 1 || node_rank < 0 || node_rank >= nnodes)); then
        echo "[inference] need NPROC_PER_NODE >= 1 and 0 <= NODE_RANK < NNODES, got $nproc, $node_rank, $nnodes" >&2
        return 1
    fi
    local chunk=$((nproc * nnodes)) first=$((node_rank * nproc))
    if [ "${#gpus[@]}" -eq 0 ]; then
        echo "[inference] no GPU visible: $nproc process(es) on the CPU" >&2
    fi
    if [ "$chunk" -eq 1 ]; then
        run_or_print $(shard_env 0 "${gpus[@]}") python -m "$module" "$@" --device "$(shard_device "${#gpus[@]}")"
        return
    fi
    echo "[inference] node $node_rank of $nnodes: shards $first-$((first + nproc - 1)) of $chunk" >&2
    trap 'kill "${pids[@]}" 2> /dev/null || true' INT TERM
    for ((i = 0; i < nproc; i++)); do
        run_or_print $(shard_env "$i" "${gpus[@]}") python -m "$module" "$@" --chunk "$chunk" --index "$((first + i))" \
            --device "$(shard_device "${#gpus[@]}")" &
        pids+=("$!")
    done
    for i in "${!pids[@]}"; do
        wait "${pids[$i]}" || { echo "[inference] shard $((first + i)) failed" >&2; failed=1; }
    done
    trap - INT TERM
    return "$failed"
}

# shard_env <local shard> <gpus...>: "env CUDA_VISIBLE_DEVICES=<its GPU>" (round-robin), nothing without GPUs.
shard_env() {
    local i="$1"
    shift
    if [ $# -gt 0 ]; then
        local gpus=("$@")
        echo "env CUDA_VISIBLE_DEVICES=${gpus[$((i % $#))]}"
    fi
}

shard_device() {
    if [ "$1" -gt 0 ]; then echo cuda; else echo cpu; fi
}

# Whether every shard of the run is written (always, on one node, once run_shards succeeded); on several nodes the
# runner checks the prediction folder against the annotations.
all_shards_done() {
    local module="$1"
    shift
    local gpus=() nproc nnodes=${NNODES:-1}
    if [ "$nnodes" -eq 1 ]; then return 0; fi
    mapfile -t gpus < <(visible_gpus)
    nproc=$(local_shards "${#gpus[@]}")
    if run_or_print python -m "$module" "$@" --chunk "$((nproc * nnodes))" --check_complete; then return 0; fi
    echo "[inference] other nodes' shards are not finished: the node that finishes last scores the run" >&2
    return 1
}

# infer_and_score <package> <folder> <default ANNO_PATH> <default VIDEO_PATH> [<checkpoint>] [inference options]:
# `python -m <package>.infer` sharded over the nodes and their GPUs into PRED_PATH (default <checkpoint>/<folder>, or
# work_dirs/<name>/<folder> for a Hub repo id org/name), then `python -m <package> PRED_PATH` scores it once every
# shard is written (unless SKIP_METRICS=1). checkpoint: a folder or a Hub repo id, default work_dirs/etchat-stage-3.
infer_and_score() {
    local package="$1" folder="$2" anno_default="$3" video_default="$4"
    shift 4
    local checkpoint="work_dirs/etchat-stage-3"
    if [ $# -gt 0 ] && [[ "$1" != --* ]]; then
        checkpoint="$1"
        shift
    fi
    local pred_default="$checkpoint/$folder"
    if [ ! -d "$checkpoint" ] && [[ "$checkpoint" =~ ^[^/.][^/]*/[^/]+$ ]]; then
        pred_default="work_dirs/${checkpoint#*/}/$folder"  # a Hub repo is no folder to write into
    fi
    local pred_path="${PRED_PATH:-$pred_default}" video_path="${VIDEO_PATH:-}"
    if [ -z "$video_path" ]; then video_path=$(prefer_compressed "$video_default"); fi
    local args=(--anno_path "${ANNO_PATH:-$anno_default}" --data_path "$video_path" --pred_path "$pred_path"
        --model_path "$checkpoint" "$@")
    run_shards "$package.infer" "${args[@]}"
    if [ "${SKIP_METRICS:-0}" != "1" ] && all_shards_done "$package.infer" "${args[@]}"; then
        # On several nodes two may complete the set together: --once lets one of them score it.
        local once=()
        if [ "${NNODES:-1}" -gt 1 ]; then once=(--once); fi
        run_or_print python -m "$package" "$pred_path" "${once[@]}"
    fi
}
