# shellcheck shell=bash
# Sourced by build_engine.sh (bash): the Hugging Face checkpoint and the TensorRT-LLM sources
# matching the TensorRT-LLM installed in the image.

HF_MODEL=${HF_MODEL:-microsoft/Phi-3-mini-4k-instruct}
MODELS=${MODELS:-/models}
HF_DIR=${HF_DIR:-$MODELS/hf/${HF_MODEL##*/}}
TRTLLM_SRC=${TRTLLM_SRC:-$MODELS/src/TensorRT-LLM}
DRY_RUN=${DRY_RUN:-0}  # 1: print each command instead of running it (CI checks the plan)

run() {
    if [ "$DRY_RUN" = 1 ]; then
        echo "+ $*"
    else
        echo "+ $*" >&2
        "$@"
    fi
}

die() {
    echo "error: $*" >&2
    exit 2
}

# TRTLLM_VERSION: the installed tensorrt_llm package's version, read without importing it
# (the import is slow and prints a banner).
resolve_version() {
    if [ -n "${TRTLLM_VERSION:-}" ]; then
        return
    elif [ "$DRY_RUN" = 1 ]; then
        TRTLLM_VERSION=0.0.0
    else
        TRTLLM_VERSION=$(python3 -c \
            'from importlib.metadata import version; print(version("tensorrt_llm"))' 2>/dev/null) ||
            die "no tensorrt_llm package here: run this inside the Triton TensorRT-LLM image"
    fi
}

# The Triton model templates, fill_template.py and the example converters live in the
# TensorRT-LLM repository (triton_backend/, examples/), not in the image: fetch the tag that
# matches the installed package, once. Or set TRTLLM_SRC to a checkout of that tag.
fetch_sources() {
    if [ "$DRY_RUN" = 1 ] || [ ! -d "$TRTLLM_SRC/triton_backend" ]; then
        run rm -rf "$TRTLLM_SRC"
        run git clone --depth 1 --branch "v$TRTLLM_VERSION" \
            https://github.com/NVIDIA/TensorRT-LLM.git "$TRTLLM_SRC"
    fi
}

fetch_model() {
    if [ "$DRY_RUN" = 1 ] || [ ! -f "$HF_DIR/config.json" ]; then
        run python3 -c "from huggingface_hub import snapshot_download; \
snapshot_download('$HF_MODEL', local_dir='$HF_DIR')"
    fi
}
