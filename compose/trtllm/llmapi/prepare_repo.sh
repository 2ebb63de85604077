#!/usr/bin/env bash
# The LLM-API path, in one command: Triton's `tensorrt_llm` Python model runs Phi-3-mini on
# TensorRT-LLM's PyTorch backend straight from the Hugging Face checkpoint; no engine build.
#     docker compose run --rm trtllm-llmapi
# then serve /models/llmapi-repo (runbook, "The LLM-API path"). The gateway's backend is then
# {"kind": "triton", "model": "tensorrt_llm", ...}. This model has no guided-decoding inputs,
# so the tagger task (a constrained one-letter answer) needs the engine path instead.
set -euo pipefail

MAX_BATCH_SIZE=${MAX_BATCH_SIZE:-64}
MAX_SEQ_LEN=${MAX_SEQ_LEN:-2048}
KV_CACHE_FREE_GPU_MEM_FRACTION=${KV_CACHE_FREE_GPU_MEM_FRACTION:-0.85}  # 0.40 on a shared GPU

here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=../common.sh
source "$here/../common.sh"  # HF_MODEL, MODELS (/models), HF_DIR, TRTLLM_SRC, DRY_RUN
LLMAPI_REPO=${LLMAPI_REPO:-$MODELS/llmapi-repo}

# model.yaml with this script's values filled in; a value missing here is an error.
render_model_yaml() {
    HF_DIR=$HF_DIR MAX_BATCH_SIZE=$MAX_BATCH_SIZE MAX_SEQ_LEN=$MAX_SEQ_LEN \
        KV_CACHE_FREE_GPU_MEM_FRACTION=$KV_CACHE_FREE_GPU_MEM_FRACTION \
        python3 -c 'import os, string, sys
print(string.Template(sys.stdin.read()).substitute(os.environ), end="")' <"$here/model.yaml"
}

main() {
    resolve_version
    echo "TensorRT-LLM $TRTLLM_VERSION: Phi-3-mini (LLM API), into $LLMAPI_REPO" >&2
    fetch_sources
    fetch_model
    run rm -rf "$LLMAPI_REPO"
    run cp -r "$TRTLLM_SRC/triton_backend/all_models/llmapi" "$LLMAPI_REPO"
    if [ "$DRY_RUN" = 1 ]; then
        echo "+ write $LLMAPI_REPO/tensorrt_llm/1/model.yaml:"
        render_model_yaml
    else
        render_model_yaml >"$LLMAPI_REPO/tensorrt_llm/1/model.yaml"
    fi
    echo "done: TRITON_MODEL_REPO=$LLMAPI_REPO docker compose --profile trtllm up -d triton" >&2
}

main "$@"
