#!/usr/bin/env bash
# LEGACY (runbook, appendix): Phi-3-mini-4k-instruct for TensorRT-LLM's TensorRT-engine
# backend on Triton, in one command: download the checkpoint, convert (and quantise) it, build
# the engine, and fill Triton's model repository. TensorRT-LLM removed this path upstream
# (NVIDIA/TensorRT-LLM PRs #15763 and #15907, mid-2026); it runs only in images that still carry
# it, the newest known being tritonserver:26.05-trtllm-python-py3 (TensorRT-LLM 1.2.1).
#
# Runs inside the Triton TensorRT-LLM image, the same image that serves the engine (an engine
# only runs on the TensorRT-LLM version that built it). From compose/, with
# COMPOSE_FILE=docker-compose.yml:docker-compose.legacy-triton.yml:
#     docker compose run --rm trtllm-build
#     QUANT=fp8 docker compose run --rm trtllm-build          (variables below)
# Produces, on the trtllm-models volume (/models):
#     hf/Phi-3-mini-4k-instruct   the checkpoint; the gateway reads its tokenizer from here
#     engines/phi3-$QUANT         the TensorRT engine
#     triton-repo                 the five Triton models: ensemble, preprocessing,
#                                 tensorrt_llm, postprocessing, tensorrt_llm_bls
set -euo pipefail

# Quantisation (QUANT). TensorRT-LLM's Phi support matrix lists FP16, BF16, FP8 and INT8 for
# Phi-3-mini-4k-instruct. INT4-AWQ, which vLLM serves in stage 1, is NOT in it, so it is refused
# here: the engine reads ~3.8 GB of weights per token where vLLM's AWQ model reads ~2.2 GB.
#   int8_wo  INT8 weight-only (W8A16), the Phi converter's own --use_weight_only; Ampere and newer
#   fp8      FP8 weights and KV cache (ModelOpt); Ada (L4, L40S) and Hopper (H100) only
#   int8_sq  INT8 SmoothQuant (ModelOpt), the matrix's INT8 entry
#   none     FP16/BF16 weights (~7.6 GB)
QUANT=${QUANT:-int8_wo}
DTYPE=${DTYPE:-float16}
MAX_BATCH_SIZE=${MAX_BATCH_SIZE:-64}
MAX_SEQ_LEN=${MAX_SEQ_LEN:-2048}  # as vLLM's --max-model-len, so both refuse the same requests
MAX_INPUT_LEN=${MAX_INPUT_LEN:-$((MAX_SEQ_LEN - 1))}
MAX_NUM_TOKENS=${MAX_NUM_TOKENS:-8192}
KV_CACHE_FREE_GPU_MEM_FRACTION=${KV_CACHE_FREE_GPU_MEM_FRACTION:-0.85}  # 0.40 on a shared GPU
INSTANCE_COUNT=${INSTANCE_COUNT:-16}  # pre/post-processing and BLS instances: concurrent requests
MAX_QUEUE_SIZE=${MAX_QUEUE_SIZE:-0}  # 0: unbounded; >0: Triton rejects requests beyond it

source "$(dirname "$0")/common.sh"  # HF_MODEL, MODELS (/models), HF_DIR, TRTLLM_SRC, DRY_RUN
TRITON_REPO=${TRITON_REPO:-$MODELS/triton-repo}
CKPT_DIR=$MODELS/checkpoints/phi3-$QUANT
ENGINE_DIR=$MODELS/engines/phi3-$QUANT
XGRAMMAR_DIR=$MODELS/xgrammar/phi3
FILL=$TRTLLM_SRC/triton_backend/tools/fill_template.py

convert() {
    local phi=$TRTLLM_SRC/examples/models/core/phi
    local quantize=$TRTLLM_SRC/examples/quantization/quantize.py
    case "$QUANT" in
        none) run python3 "$phi/convert_checkpoint.py" --model_dir "$HF_DIR" \
            --output_dir "$CKPT_DIR" --dtype "$DTYPE" ;;
        int8_wo) run python3 "$phi/convert_checkpoint.py" --model_dir "$HF_DIR" \
            --output_dir "$CKPT_DIR" --dtype "$DTYPE" \
            --use_weight_only --weight_only_precision int8 ;;
        fp8) run python3 "$quantize" --model_dir "$HF_DIR" --output_dir "$CKPT_DIR" \
            --dtype "$DTYPE" --qformat fp8 --kv_cache_dtype fp8 ;;
        int8_sq) run python3 "$quantize" --model_dir "$HF_DIR" --output_dir "$CKPT_DIR" \
            --dtype "$DTYPE" --qformat int8_sq --kv_cache_dtype int8 ;;
    esac
}

check_quant() {
    case "$QUANT" in
        none | int8_wo | fp8 | int8_sq) ;;
        int4*) die "QUANT=$QUANT: INT4 (AWQ or weight-only) is not in TensorRT-LLM's support" \
            "matrix for Phi-3 (FP16, BF16, FP8, INT8); use int8_wo, or fp8 on Ada/Hopper" ;;
        *) die "QUANT=$QUANT: expected none, int8_wo, fp8 or int8_sq" ;;
    esac
}

# Paged context attention is what lets the KV-cache reuse switched on below serve the
# tagger's shared prefix (system prompt and examples) from cache.
build() {
    run trtllm-build --checkpoint_dir "$CKPT_DIR" --output_dir "$ENGINE_DIR" \
        --gemm_plugin auto --kv_cache_type paged --use_paged_context_fmha enable \
        --max_batch_size "$MAX_BATCH_SIZE" --max_input_len "$MAX_INPUT_LEN" \
        --max_seq_len "$MAX_SEQ_LEN" --max_num_tokens "$MAX_NUM_TOKENS"
}

# fill MODEL REQUIRED [OPTIONAL]: fill_template.py fails on a required key its template lacks;
# optional keys, which only some TensorRT-LLM versions template, are filled where present.
fill() {
    local config=$TRITON_REPO/$1/config.pbtxt pairs=$2 pair
    local -a optional=()
    IFS=, read -r -a optional <<<"${3:-}"
    for pair in "${optional[@]}"; do
        if [ "$DRY_RUN" = 1 ] || grep -qF "\${${pair%%:*}}" "$config"; then
            pairs+=",$pair"
        fi
    done
    run python3 "$FILL" -i "$config" "$pairs"
}

fill_templates() {
    local bs=$MAX_BATCH_SIZE n=$INSTANCE_COUNT
    run rm -rf "$TRITON_REPO"
    run cp -r "$TRTLLM_SRC/triton_backend/all_models/inflight_batcher_llm" "$TRITON_REPO"
    fill ensemble "triton_max_batch_size:$bs,logits_datatype:TYPE_FP32"
    # add_special_tokens:False: text_input is tokenized as it comes, as vLLM tokenizes a rendered
    # chat (the template decides about BOS); the gateway adds BOS to completion prompts itself.
    fill preprocessing "tokenizer_dir:$HF_DIR,triton_max_batch_size:$bs,\
preprocessing_instance_count:$n,add_special_tokens:False"
    fill postprocessing \
        "tokenizer_dir:$HF_DIR,triton_max_batch_size:$bs,postprocessing_instance_count:$n"
    # decoupled: streams; exclude_input_in_output: answers without the prompt echoed;
    # guided decoding (xgrammar): the tagger's one-letter code is a constrained choice.
    fill tensorrt_llm "triton_backend:tensorrtllm,triton_max_batch_size:$bs,decoupled_mode:true,\
engine_dir:$ENGINE_DIR,max_queue_delay_microseconds:0,max_queue_size:$MAX_QUEUE_SIZE,\
batching_strategy:inflight_fused_batching,encoder_input_features_data_type:TYPE_FP16,\
logits_datatype:TYPE_FP32,exclude_input_in_output:true,enable_kv_cache_reuse:true,\
kv_cache_free_gpu_mem_fraction:$KV_CACHE_FREE_GPU_MEM_FRACTION,guided_decoding_backend:xgrammar,\
xgrammar_tokenizer_info_path:$XGRAMMAR_DIR/xgrammar_tokenizer_info.json" \
        "prompt_embedding_table_data_type:TYPE_FP16"
    # accumulate_tokens: streamed text is cumulative, so Vietnamese characters split over two
    # tokens arrive whole (the gateway sends clients the difference).
    fill tensorrt_llm_bls "triton_max_batch_size:$bs,decoupled_mode:true,bls_instance_count:$n,\
logits_datatype:TYPE_FP32,accumulate_tokens:true" \
        "tensorrt_llm_model_name:tensorrt_llm,prompt_embedding_table_data_type:TYPE_FP16"
}

main() {
    check_quant
    resolve_version
    echo "TensorRT-LLM $TRTLLM_VERSION: Phi-3-mini, QUANT=$QUANT, into $TRITON_REPO" >&2
    fetch_sources
    fetch_model
    convert
    build
    run python3 "$TRTLLM_SRC/examples/generate_xgrammar_tokenizer_info.py" \
        --model_dir "$HF_DIR" --output_dir "$XGRAMMAR_DIR"
    fill_templates
    echo "done: serve with docker compose up -d triton" >&2
}

main "$@"
