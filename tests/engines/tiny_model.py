"""A tiny random Phi-3 model with a real tokenizer, built locally for engines under test.

The directory it writes loads in both vLLM and HF transformers: a byte-level BPE tokenizer
trained on a bundled English and Vietnamese corpus, Phi-3's special tokens and chat template,
and a two-layer ``Phi3ForCausalLM`` with random bf16 weights. Its output is gibberish, often
cut mid-character, which is what decoding code needs to be tested against.

The corpus, the tokenizer training, the build marker and the seeded weights are shared with
the tiny Qwen3 model in ``tiny_qwen3``.

Example::

    model_dir = build_tiny_model(Path("/tmp/tiny-phi3"))
    # vllm ... --model /tmp/tiny-phi3   or   AutoModelForCausalLM.from_pretrained(model_dir)
"""

from __future__ import annotations

import functools
import json
import pathlib
from collections.abc import Callable, Sequence

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    GenerationConfig,
    Phi3Config,
    Phi3ForCausalLM,
    PreTrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

# Bumped whenever the build changes, so directories built by older code are rebuilt.
_FORMAT = 1
_MARKER = ".tiny-model-complete"
_VOCAB_SIZE = 1500

SPECIAL_TOKENS = (
    "<unk>",
    "<s>",
    "</s>",
    "<|endoftext|>",
    "<|assistant|>",
    "<|system|>",
    "<|end|>",
    "<|user|>",
)

# Phi-3 pads with its end-of-text token.
_SPECIAL_TOKEN_ROLES = {
    "bos_token": "<s>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<unk>",
    "pad_token": "<|endoftext|>",
}

# Phi-3-mini's template after its June 2024 update (the one with system-role support).
PHI3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}"
    "{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}"
    "{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

CORPUS = """\
The gateway forwards each request to the engine that serves the model.
A small model answers quickly, but its answers are random words.
Please summarise the meeting notes in three short sentences.
What is the capital of Vietnam? The capital of Vietnam is Hanoi.
The weather in Da Nang is sunny today, with a light breeze from the sea.
Streaming responses arrive token by token over server-sent events.
When the client disconnects, the server should stop generating tokens.
Latency is measured from the first byte sent to the last byte received.
Throughput grows with batch size until the memory for the cache runs out.
She ordered a bowl of pho and a glass of iced coffee with condensed milk.
The train from Hanoi to Ho Chi Minh City takes about thirty hours.
Write a haiku about rain falling on the old quarter at night.
Errors must be reported in the same format the client library expects.
The tokenizer splits text into pieces; the model predicts the next piece.
Numbers like 42, 3.14 and 2024 appear in logs, prices and dates.
Xin chào! Bạn có khỏe không?
Tôi tên là Lan, tôi đến từ Việt Nam.
Hôm nay trời đẹp quá, chúng ta đi dạo bên hồ Hoàn Kiếm nhé.
Thủ đô của Việt Nam là Hà Nội, một thành phố nghìn năm văn hiến.
Tôi muốn đặt một bàn cho bốn người vào tối thứ bảy.
Phở bò là món ăn sáng phổ biến ở miền Bắc.
Cà phê sữa đá ở Sài Gòn rất ngon và rẻ.
Xin lỗi, nhà ga xe lửa ở đâu ạ?
Mùa thu Hà Nội có gió heo may và hương hoa sữa.
Học sinh đang chuẩn bị cho kỳ thi cuối năm.
Bà ngoại kể chuyện cổ tích cho các cháu nghe mỗi tối.
Người dân ở đồng bằng sông Cửu Long sống bằng nghề trồng lúa và đánh cá.
Hãy tóm tắt đoạn văn sau trong ba câu ngắn gọn.
Mô hình ngôn ngữ dự đoán từ tiếp theo dựa trên ngữ cảnh.
Cảm ơn bạn rất nhiều vì đã giúp đỡ tôi hôm qua.
Vịnh Hạ Long nổi tiếng với hàng nghìn đảo đá vôi kỳ vĩ.
Đường phố đông đúc xe máy vào giờ cao điểm buổi chiều.
Giá vé máy bay từ Đà Nẵng đi Huế là bao nhiêu?
Chiếc áo dài truyền thống được may bằng lụa mềm mại.
Ước mơ của em là trở thành bác sĩ để chữa bệnh cho mọi người.
Nghỉ ngơi đầy đủ giúp cơ thể khỏe mạnh và tinh thần minh mẫn.
Ông ấy đọc báo, uống trà và nghe đài mỗi sáng sớm.
Dữ liệu được gửi qua mạng theo từng gói nhỏ.
Ứng dụng này hỗ trợ tiếng Việt có dấu đầy đủ: ă â đ ê ô ơ ư.
Những chữ như ầ, ẩ, ẫ, ấ, ậ, ễ, ỡ, ữ, ỹ, ỵ thử bộ giải mã UTF-8.
"""


def build_tiny_model(target: pathlib.Path, *, seed: int = 0, heads: int = 2) -> pathlib.Path:
    """Build the tiny Phi-3 model into ``target`` (or reuse a complete build there); return it.

    The same seed gives byte-identical files. ``heads=8`` gives head_dim 16, which vLLM's CPU
    build loads and then dies on at the first generation: a real engine fault for the
    gateway's health logic to detect.
    """
    recipe = f"format={_FORMAT}\nseed={seed}\n" + (f"heads={heads}\n" if heads != 2 else "")
    return build_once(target, recipe, functools.partial(_write_phi3, seed=seed, heads=heads))


def build_once(
    target: pathlib.Path, recipe: str, write: Callable[[pathlib.Path], None]
) -> pathlib.Path:
    """Run ``write(target)`` unless a complete build of ``recipe`` is there; return ``target``.

    A marker holding the recipe, written last, tells a finished build from one that was
    interrupted or made by another recipe; either is simply built again over the same names.
    """
    marker = target / _MARKER
    if marker.is_file() and marker.read_text(encoding="utf-8") == recipe:
        return target
    target.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    write(target)
    marker.write_text(recipe, encoding="utf-8")
    return target


def train_byte_level_bpe(special_tokens: Sequence[str] = ()) -> Tokenizer:
    """A byte-level BPE trained on the bundled corpus; ``special_tokens`` take the first ids."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_VOCAB_SIZE,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(CORPUS.splitlines(), trainer=trainer)
    return core


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, target: pathlib.Path) -> None:
    """Save with the chat template in tokenizer_config.json, where Phi-3 and Qwen3 keep it and
    plain readers look, under a class name every transformers release knows (v5 would write
    its own ``TokenizersBackend``)."""
    tokenizer.save_pretrained(target, save_jinja_files=False)
    config_path = target / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    text = json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    config_path.write_text(text, encoding="utf-8")


def token_id(tokenizer: PreTrainedTokenizerFast, token: str) -> int:
    """The id of a token the vocabulary holds whole; ``TypeError`` for one it splits."""
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int):
        raise TypeError(f"no single id for {token!r}")
    return found


def seeded_model(
    model_class: Callable[[PreTrainedConfig], PreTrainedModel], config: PreTrainedConfig, seed: int
) -> PreTrainedModel:
    """Random bf16 weights from ``seed``, drawn from a private RNG state: the caller's torch
    seed stays untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.bfloat16()


def random_phi3(
    *, seed: int = 0, heads: int = 2
) -> tuple[PreTrainedTokenizerFast, PreTrainedModel]:
    """The tokenizer and the seeded random model that ``build_tiny_model`` writes."""
    tokenizer = _phi3_tokenizer()
    return tokenizer, seeded_model(Phi3ForCausalLM, _phi3_config(tokenizer, heads), seed)


def save_phi3(
    target: pathlib.Path, tokenizer: PreTrainedTokenizerFast, model: PreTrainedModel
) -> None:
    """Writes a Phi-3 directory: tokenizer, bf16 weights and Phi-3-mini's generation config."""
    save_tokenizer(tokenizer, target)
    model.save_pretrained(target)
    _phi3_generation_config(tokenizer).save_pretrained(target)


def _write_phi3(target: pathlib.Path, *, seed: int, heads: int) -> None:
    save_phi3(target, *random_phi3(seed=seed, heads=heads))


def _phi3_tokenizer() -> PreTrainedTokenizerFast:
    """The corpus BPE with Phi-3's special tokens, which prepends <s> as Phi-3's own does."""
    core = train_byte_level_bpe(SPECIAL_TOKENS)
    bos_id = core.token_to_id("<s>")
    core.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    # transformers leaves this constructor unannotated.
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        **_SPECIAL_TOKEN_ROLES,
        additional_special_tokens=["</s>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"],
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    tokenizer.chat_template = PHI3_CHAT_TEMPLATE
    return tokenizer


def _phi3_config(tokenizer: PreTrainedTokenizerFast, heads: int) -> Phi3Config:
    """A two-layer Phi-3; head_dim 128/heads (64 by default: vLLM's CPU attention rejects 16)."""
    return Phi3Config(
        vocab_size=len(tokenizer),
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=4096,
        original_max_position_embeddings=4096,
        bos_token_id=token_id(tokenizer, "<s>"),
        eos_token_id=token_id(tokenizer, "<|endoftext|>"),
        pad_token_id=token_id(tokenizer, "<|endoftext|>"),
        tie_word_embeddings=False,
        dtype="bfloat16",
    )


def _phi3_generation_config(tokenizer: PreTrainedTokenizerFast) -> GenerationConfig:
    """Stop ids as in Phi-3-mini's generation_config.json: end of text, assistant, end of turn."""
    stop_tokens = ("<|endoftext|>", "<|assistant|>", "<|end|>")
    return GenerationConfig(  # type: ignore[no-untyped-call]  # unannotated in transformers
        bos_token_id=token_id(tokenizer, "<s>"),
        eos_token_id=[token_id(tokenizer, token) for token in stop_tokens],
        pad_token_id=token_id(tokenizer, "<|endoftext|>"),
    )
