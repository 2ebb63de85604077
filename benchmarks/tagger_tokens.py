"""How many tokens a task's answer and prompt take with a given model's tokenizer.

Usage:
    python benchmarks/tagger_tokens.py TOKENIZER_DIR [--task tagger] [--tasks-dir prompts]
        [--dataset prompts/tagger/dataset.jsonl]

TOKENIZER_DIR holds a `tokenizer.json` (HF tokenizers) or a `tokenizer.model` (SentencePiece,
e.g. Llama-2's, which Phi-3-mini uses). Prints, per code: its tokens, and whether the code is one
vocabulary entry (what a constrained engine emits after `<|assistant|>\\n`); per expanded JSON
answer: its tokens; and the prompt: shared prefix and per-request part, rendered with the Phi-3
chat template (special tokens counted as one each). Exits 1 when a code needs more tokens than
the task's `max_tokens`, since the engine would then cut it.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import orjson

from backends.chat_template import ChatTemplate
from gateway.tasks.task import Task, load_tasks

SPECIAL = re.compile(r"(<\|[a-z]+\|>)")


class Counter:
    """Token counts from a tokenizer.json or a SentencePiece model."""

    def __init__(self, folder: Path) -> None:
        self.source = folder
        if (folder / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            self._hf: Any = Tokenizer.from_file(str(folder / "tokenizer.json"))
            self._sp: Any = None
        elif (folder / "tokenizer.model").is_file():
            import sentencepiece

            self._hf = None
            self._sp = sentencepiece.SentencePieceProcessor(
                model_file=str(folder / "tokenizer.model")
            )
        else:
            raise SystemExit(f"{folder} has neither tokenizer.json nor tokenizer.model")

    def pieces(self, text: str) -> list[str]:
        if self._hf is not None:
            return list(self._hf.encode(text, add_special_tokens=False).tokens)
        return list(self._sp.encode(text, out_type=str))

    def is_one_entry(self, text: str) -> bool:
        if self._hf is not None:
            return self._hf.token_to_id(text) is not None
        return bool(self._sp.piece_to_id(text) != self._sp.unk_id())

    def count_prompt(self, text: str) -> int:
        """Tokens of a rendered prompt, each `<|...|>` marker counting as one."""
        if self._hf is not None:
            return len(self._hf.encode(text, add_special_tokens=False).ids)
        parts = SPECIAL.split(text)
        return sum(
            1 if SPECIAL.fullmatch(part) else len(self.pieces(part)) for part in parts if part
        )


def report(task: Task, counter: Counter, dataset: Path | None) -> int:
    print(f"task {task.alias} {task.version} (prompt {task.fingerprint}), {counter.source}")
    print(f"\n{'code':<6}{'tokens':>7}  {'one entry':<10} pieces")
    longest = 0
    for code in task.codes:
        pieces = counter.pieces(code)
        longest = max(longest, len(pieces))
        entry = "yes" if counter.is_one_entry(code) else "no"
        print(f"{code:<6}{len(pieces):>7}  {entry:<10} {pieces}")
    print(f"\n{'tokens':>6}  JSON answer the client receives")
    for code in task.codes:
        labels = task.expand(code) or {}
        for text in (orjson.dumps(labels).decode(), json.dumps(labels)):
            print(f"{len(counter.pieces(text)):>6}  {text}")
    _prompt_sizes(task, counter, dataset)
    limit = task.config.decoding.max_tokens
    if longest > limit:
        print(f"\nFAIL: a code takes {longest} tokens but max_tokens is {limit}", file=sys.stderr)
        return 1
    print(f"\nOK: every code fits in max_tokens={limit}")
    return 0


def _prompt_sizes(task: Task, counter: Counter, dataset: Path | None) -> None:
    template = ChatTemplate.builtin("phi3")
    rows = _rows(task, dataset)
    shared_text = template.render(task.build(rows[0], model="m")["messages"][:-1])
    shared = counter.count_prompt(shared_text.removesuffix("<|assistant|>\n"))
    suffixes = []
    for payload in rows:
        whole = counter.count_prompt(template.render(task.build(payload, model="m")["messages"]))
        suffixes.append(whole - shared)
    print(
        f"\nprompt (Phi-3 template): shared prefix {shared} tokens; per-request part over "
        f"{len(rows)} exchanges: mean {statistics.mean(suffixes):.0f}, max {max(suffixes)}"
    )


def _rows(task: Task, dataset: Path | None) -> list[dict[str, Any]]:
    roles = task.config.dataset.exchange if task.config.dataset else {}
    if dataset is None or not roles:
        example = task.config.examples[0].exchange
        return [{"messages": [{"role": role, "content": text} for role, text in example.items()]}]
    payloads = []
    for line in dataset.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        messages = [{"role": role, "content": row[column]} for role, column in roles.items()]
        payloads.append({"messages": messages})
    return payloads


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "tokenizer", type=Path, help="folder with tokenizer.json or tokenizer.model"
    )
    parser.add_argument("--task", default="tagger")
    parser.add_argument("--tasks-dir", type=Path, default=Path("prompts"))
    parser.add_argument("--dataset", type=Path, default=None, help="JSONL for prompt sizes")
    args = parser.parse_args()
    task = load_tasks(args.tasks_dir)[args.task]
    return report(task, Counter(args.tokenizer), args.dataset)


if __name__ == "__main__":
    sys.exit(main())
