"""Trains the tests' tiny Phi-3 to answer the tagger prompt with its one-token code.

The inputs are the token ids vLLM reads for ``Task.build``'s chat (the chat template rendered,
tokenized without special tokens): a shared prefix of ~1,500 tokens (system prompt and
examples), then the exchange. The target is the code token right after ``<|assistant|>\\n``.
Training runs on the CPU in two phases, single-threaded and deterministic:

1. *Exchange only*: the exchange after the prefix's last few tokens. Short sequences, so the
   model learns the labels in seconds.
2. *Whole prompt*: the exchange after the real prefix, whose keys and values are computed
   each step without gradient and shared by the batch. Half the steps put ``<s>`` in front,
   as Triton's tokenizer step does when it adds special tokens, so every engine's prompt gives
   the same code.

Alongside, a distillation term keeps the random model's next-token distributions on ordinary
chats and text (the bundled corpus, and the random model's own continuations): away from the
tagger prompt the model still answers diverse gibberish, which the rest of the suite tests
sampling, stops and streaming against.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import DynamicCache, PreTrainedModel, PreTrainedTokenizerFast

from gateway.tasks.task import Task
from tests.engines.tiny_model import CORPUS, token_id


@dataclass(frozen=True)
class Example:
    id: str
    exchange: tuple[int, ...]  # the prompt's ids after the shared prefix
    code: int  # the answer's token id


@dataclass(frozen=True)
class Prompts:
    prefix: tuple[int, ...]  # shared by every exchange, as the engines' prefix caches see it
    examples: tuple[Example, ...]


@dataclass(frozen=True)
class Schedule:
    """The training's knobs; the defaults build the tests' model."""

    seed: int = 0
    exchange_epochs: int = 30
    prompt_epochs: int = 12
    batch: int = 32
    lr: float = 1e-3
    dropout: float = 0.1
    weight_decay: float = 0.1
    distill_weight: float = 1.0
    distill_batch: int = 16


def tagger_prompts(
    tokenizer: PreTrainedTokenizerFast, task: Task, rows: Sequence[dict[str, Any]]
) -> Prompts:
    """Each labelled row as vLLM's prompt ids, split at the prefix every row shares."""
    ids, codes = [], []
    columns = task.config.dataset.exchange if task.config.dataset else {}
    for row in rows:
        messages = [{"role": role, "content": row[column]} for role, column in columns.items()]
        body = task.build({"messages": messages}, model="m")
        text = tokenizer.apply_chat_template(
            body["messages"], tokenize=False, add_generation_prompt=True
        )
        ids.append(tuple(tokenizer.encode(text, add_special_tokens=False)))
        code = next(c for c in task.codes if task.expand(c) == _labels(task, row))
        codes.append(token_id(tokenizer, code))
    shared = len(ids[0])
    for other in ids[1:]:
        shared = next((n for n in range(shared) if other[n] != ids[0][n]), shared)
    examples = tuple(
        Example(str(row["id"]), seq[shared:], code)
        for row, seq, code in zip(rows, ids, codes, strict=True)
    )
    return Prompts(ids[0][:shared], examples)


def _labels(task: Task, row: dict[str, Any]) -> dict[str, Any]:
    return {name: row[name] for name in task.fields}


def train(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerFast,
    prompts: Prompts,
    schedule: Schedule,
) -> PreTrainedModel:
    """The model trained in float32 (returned in float32); deterministic for a schedule."""
    torch.set_num_threads(1)  # small matrices: one thread is fastest, and shares a busy host
    torch.use_deterministic_algorithms(True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(schedule.seed)
        model = model.float()  # type: ignore[no-untyped-call]  # unannotated in transformers
        distill = Distillation(model, tokenizer, schedule)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = schedule.dropout
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=schedule.lr, weight_decay=schedule.weight_decay
        )
        order = random.Random(schedule.seed)
        examples = list(prompts.examples)
        lead = _lead(prompts.prefix, tokenizer)
        model.train()
        for _ in range(schedule.exchange_epochs):
            for batch in _batches(examples, schedule.batch, order):
                loss = _code_loss(model, batch, lead=lead) + distill.loss(model)
                _step(optimizer, loss)
        bos = (tokenizer.bos_token_id, *prompts.prefix)
        for _ in range(schedule.prompt_epochs):
            for index, batch in enumerate(_batches(examples, schedule.batch, order)):
                prefix = bos if index % 2 else prompts.prefix
                loss = _code_loss(model, batch, prefix=prefix) + distill.loss(model)
                _step(optimizer, loss)
        model.train(False)
    return model


def _lead(prefix: tuple[int, ...], tokenizer: PreTrainedTokenizerFast) -> tuple[int, ...]:
    """The prefix from its last ``<|end|>`` on: the turn opening that precedes the exchange."""
    end = tokenizer.convert_tokens_to_ids("<|end|>")
    return prefix[len(prefix) - 1 - prefix[::-1].index(end) :]


def _batches(examples: list[Example], size: int, order: random.Random) -> Iterator[list[Example]]:
    order.shuffle(examples)
    for start in range(0, len(examples), size):
        yield examples[start : start + size]


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]  # torch's stub
    optimizer.step()


def _code_loss(
    model: PreTrainedModel,
    batch: Sequence[Example],
    *,
    prefix: tuple[int, ...] = (),
    lead: tuple[int, ...] = (),
) -> torch.Tensor:
    logits = code_logits(model, batch, prefix=prefix, lead=lead)
    return torch.nn.functional.cross_entropy(logits, torch.tensor([e.code for e in batch]))


def code_logits(
    model: PreTrainedModel,
    batch: Sequence[Example],
    *,
    prefix: tuple[int, ...] = (),
    lead: tuple[int, ...] = (),
) -> torch.Tensor:
    """The next-token logits after each example's prompt: ``prefix`` (its keys and values
    computed once, without gradient, for the whole batch), then ``lead`` and the exchange."""
    cache = None
    if prefix:
        with torch.no_grad():
            shared = model.model(input_ids=torch.tensor([prefix]), use_cache=True)
        cache = DynamicCache()
        for index, layer in enumerate(shared.past_key_values.layers):
            size = (len(batch), -1, -1, -1)
            cache.update(layer.keys.expand(size), layer.values.expand(size), index)
    rows = [(*lead, *example.exchange) for example in batch]
    # Padded on the right: causal attention keeps the padding out of every real position.
    ids = torch.zeros((len(rows), max(map(len, rows))), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row)
    hidden = model.model(input_ids=ids, past_key_values=cache, use_cache=bool(prefix))
    last = torch.tensor([len(row) - 1 for row in rows])
    logits: torch.Tensor = model.lm_head(hidden.last_hidden_state[torch.arange(len(rows)), last])
    return logits


class Distillation:
    """KL to the untrained model's next-token distributions on ordinary chats and text."""

    def __init__(
        self, teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, schedule: Schedule
    ) -> None:
        self.weight, self.batch = schedule.distill_weight, schedule.distill_batch
        sequences = _ordinary_sequences(teacher, tokenizer)
        width = max(map(len, sequences))
        self.ids = torch.full((len(sequences), width), tokenizer.pad_token_id)
        self.mask = torch.zeros((len(sequences), width), dtype=torch.bool)
        for index, sequence in enumerate(sequences):
            self.ids[index, : len(sequence)] = torch.tensor(sequence)
            self.mask[index, : len(sequence)] = True
        with torch.no_grad():
            teacher.train(False)
            self.target = torch.log_softmax(teacher(input_ids=self.ids).logits, dim=-1)
        self._next = 0

    def loss(self, model: PreTrainedModel) -> torch.Tensor:
        rows = [(self._next + n) % len(self.ids) for n in range(self.batch)]
        self._next = (self._next + self.batch) % len(self.ids)
        mask = self.mask[rows]
        student = torch.log_softmax(model(input_ids=self.ids[rows]).logits, dim=-1)
        target = self.target[rows]
        divergence = (target.exp() * (target - student)).sum(-1)
        return self.weight * divergence[mask].mean()


def _ordinary_sequences(
    teacher: PreTrainedModel, tokenizer: PreTrainedTokenizerFast
) -> list[list[int]]:
    """Chats (with and without a system prompt) and plain text from the corpus, each chat
    followed by the untrained model's own sampled answer."""
    sequences = []
    system = {"role": "system", "content": "Bạn là Pika, gia sư của các bạn nhỏ."}
    for line in CORPUS.splitlines():
        user = {"role": "user", "content": line}
        for messages in ([user], [system, user]):
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            prompt = tokenizer.encode(text, add_special_tokens=False)  # as vLLM's chat
            sequences.append([*prompt, *_sample(teacher, prompt)])
        sequences.append(tokenizer.encode(line))  # `/v1/completions`: BOS, then the text
    return sequences


def _sample(model: PreTrainedModel, prompt: list[int], tokens: int = 12) -> list[int]:
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(tokens):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1]
            ids.append(int(torch.multinomial(torch.softmax(logits, dim=-1), 1)))
    return ids[len(prompt) :]
