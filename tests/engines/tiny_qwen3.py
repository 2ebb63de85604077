"""A tiny random Qwen3 model, the shape of the team's fine-tuned chat model, built locally.

Like the tiny Phi-3 in ``tiny_model`` (whose corpus, tokenizer training, build marker and
seeded weights it shares), the directory loads in both vLLM and HF transformers: a byte-level
BPE tokenizer with Qwen3's control tokens after the trained vocabulary, Qwen3's ChatML chat
template for text chats, a two-layer ``Qwen3ForCausalLM`` with random bf16 weights and Qwen3's
sampling defaults in ``generation_config.json``, which vLLM applies to requests that leave
them out.

Example::

    model_dir = build_tiny_qwen3(Path("/tmp/tiny-qwen3"))
    # vllm ... --model /tmp/tiny-qwen3   or   AutoModelForCausalLM.from_pretrained(model_dir)
"""

from __future__ import annotations

import functools
import pathlib

from tokenizers import AddedToken
from transformers import GenerationConfig, PreTrainedTokenizerFast, Qwen3Config, Qwen3ForCausalLM

from tests.engines.tiny_model import (
    build_once,
    save_tokenizer,
    seeded_model,
    token_id,
    train_byte_level_bpe,
)

# Bumped whenever the build changes, so directories built by older code are rebuilt.
_FORMAT = 1

# Special, so decoding with skip_special_tokens drops them.
CONTROL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# One id each but not special, as in Qwen3: decoded text keeps them for reasoning parsers.
THINK_TOKENS = ("<think>", "</think>")

# Qwen3's chat template as released with the hybrid-thinking models (Qwen/Qwen3-0.6B's
# tokenizer_config.json; llama.cpp keeps a copy as models/templates/Qwen-Qwen3-0.6B.jinja),
# the part a text chat reaches, kept line for line: the tools preamble, tool calls and the
# tool role are left out. An assistant turn after the last user query keeps its <think> block,
# earlier ones lose it; enable_thinking=false closes an empty block after the generation prompt.
QWEN3_CHAT_TEMPLATE = r"""{%- if messages[0].role == 'system' %}
    {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set content = message.content %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is defined and message.reasoning_content is not none %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in message.content %}
                {%- set content = message.content.split('</think>')[-1].lstrip('\n') %}
                {%- set reasoning_content = message.content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""  # noqa: E501  # Qwen3's lines, unwrapped so they stay comparable with the original


def build_tiny_qwen3(target: pathlib.Path, *, seed: int = 0) -> pathlib.Path:
    """Build the tiny Qwen3 model into ``target`` (or reuse a complete build there); return it.

    The same seed gives byte-identical files.
    """
    recipe = f"model=qwen3\nformat={_FORMAT}\nseed={seed}\n"
    return build_once(target, recipe, functools.partial(_write_qwen3, seed=seed))


def _write_qwen3(target: pathlib.Path, *, seed: int) -> None:
    tokenizer = _qwen3_tokenizer()
    save_tokenizer(tokenizer, target)
    seeded_model(Qwen3ForCausalLM, _qwen3_config(tokenizer), seed).save_pretrained(target)
    _qwen3_generation_config(tokenizer).save_pretrained(target)


def _qwen3_tokenizer() -> PreTrainedTokenizerFast:
    """The corpus BPE, then Qwen3's added tokens; no BOS, as Qwen3's tokenizer adds none."""
    core = train_byte_level_bpe()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in CONTROL_TOKENS])
    core.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    # transformers leaves this constructor unannotated.
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def _qwen3_config(tokenizer: PreTrainedTokenizerFast) -> Qwen3Config:
    """Two layers of two heads, head_dim 64 (vLLM's CPU attention rejects 16); the rest as in
    Qwen3-0.6B: tied embeddings, rope theta 1e6, no sliding window."""
    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=64,
        max_position_embeddings=4096,
        max_window_layers=2,
        rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0},
        bos_token_id=token_id(tokenizer, "<|endoftext|>"),
        eos_token_id=token_id(tokenizer, "<|im_end|>"),
        tie_word_embeddings=True,
        dtype="bfloat16",
    )


def _qwen3_generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Qwen3's generation_config.json: sampled at temperature 0.6, top-p 0.95, top-k 20, and
    stopping at the end of a turn or of the text."""
    end_of_text = token_id(tokenizer, "<|endoftext|>")
    return GenerationConfig(  # type: ignore[no-untyped-call]  # unannotated in transformers
        bos_token_id=end_of_text,
        eos_token_id=[token_id(tokenizer, "<|im_end|>"), end_of_text],
        pad_token_id=end_of_text,
        do_sample=True,
        temperature=0.6,
        top_p=0.95,
        top_k=20,
    )
