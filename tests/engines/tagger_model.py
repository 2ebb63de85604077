"""The tests' tiny Phi-3 trained to answer the tagger: built once, cached, rebuilt on change.

The same tokenizer and architecture as ``tiny_model`` (so vLLM and the Triton test engines
load it unchanged), with the seeded random weights trained on the dev split of
``prompts/tagger/dataset.jsonl`` (``tagger_training``). The cache key is a hash of the dataset,
the task file and the three modules that make the model: editing any of them rebuilds it. The
build is deterministic for a given machine and takes a few minutes on one core.

Run as a script, it builds into a folder and prints the model's own accuracy and code margins
per split (bf16, as the engines run it)::

    python -m tests.engines.tagger_model .cache/tiny-phi3
    python -m tests.engines.tagger_model /tmp/holdout --holdout 0.2   # train on part of dev
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import pathlib
import random
import time
from collections.abc import Sequence
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from gateway.tasks.task import Task, load_task
from tests.engines import tagger_training, tiny_model
from tests.engines.tagger_training import Schedule

ROOT = pathlib.Path(__file__).resolve().parents[2]
TASK = ROOT / "prompts" / "tagger" / "task.toml"
DATASET = ROOT / "prompts" / "tagger" / "dataset.jsonl"
DEFAULT = Schedule()
_SOURCES = (
    pathlib.Path(tiny_model.__file__),
    pathlib.Path(tagger_training.__file__),
    TASK,
    DATASET,
)


def build_tagger_model(target: pathlib.Path, schedule: Schedule = DEFAULT) -> pathlib.Path:
    """The trained model in ``target``, built unless a build of the same recipe is there."""
    digest = hashlib.sha256(pathlib.Path(__file__).read_bytes())
    for source in _SOURCES:
        digest.update(source.read_bytes())
    recipe = f"tagger\nsources={digest.hexdigest()}\nschedule={schedule}\n"
    write = functools.partial(_write, schedule=schedule, holdout=0.0)
    return tiny_model.build_once(target, recipe, write)


def dataset_rows(split: str) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in DATASET.read_text(encoding="utf-8").splitlines()]
    return [row for row in rows if row["split"] == split]


def _write(target: pathlib.Path, *, schedule: Schedule, holdout: float) -> None:
    tokenizer, model = tiny_model.random_phi3(seed=schedule.seed)
    train_rows, _ = _split(dataset_rows("dev"), holdout)
    prompts = tagger_training.tagger_prompts(tokenizer, load_task(TASK), train_rows)
    trained = tagger_training.train(model, tokenizer, prompts, schedule)
    tiny_model.save_phi3(target, tokenizer, trained.bfloat16())


def _split(
    rows: list[dict[str, Any]], holdout: float
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows kept out of training, by contrastive pair, for measuring a schedule on dev."""
    pairs = sorted({min(row["id"], row.get("pair") or row["id"]) for row in rows})
    random.Random(0).shuffle(pairs)
    held = set(pairs[: int(len(pairs) * holdout)])
    kept = [row for row in rows if min(row["id"], row.get("pair") or row["id"]) not in held]
    return kept, [row for row in rows if row not in kept]


def code_report(
    model: PreTrainedModel, task: Task, tokenizer: Any, rows: Sequence[dict[str, Any]]
) -> str:
    """Accuracy and the smallest margin between the best and second code, with and without
    a leading ``<s>``, from a whole-prompt forward pass in the model's dtype."""
    prompts = tagger_training.tagger_prompts(tokenizer, task, rows)
    codes = torch.tensor([tokenizer.convert_tokens_to_ids(code) for code in task.codes])
    parts = []
    for name, lead in (("as vLLM", ()), ("with <s>", (tokenizer.bos_token_id,))):
        right, margins = 0, []
        for start in range(0, len(prompts.examples), 16):
            batch = prompts.examples[start : start + 16]
            logits = _whole_prompt_logits(
                model, [(*lead, *prompts.prefix, *e.exchange) for e in batch]
            )
            top = torch.topk(logits[:, codes], 2).values
            best = codes[torch.argmax(logits[:, codes], dim=-1)]
            right += sum(int(b) == e.code for b, e in zip(best, batch, strict=True))
            margins += (top[:, 0] - top[:, 1]).tolist()
        parts.append(f"{name}: {right}/{len(rows)} right, smallest margin {min(margins):.2f}")
    return "; ".join(parts)


def _whole_prompt_logits(model: PreTrainedModel, rows: list[tuple[int, ...]]) -> torch.Tensor:
    ids = torch.zeros((len(rows), max(map(len, rows))), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    last: torch.Tensor = logits[torch.arange(len(rows)), torch.tensor([len(r) - 1 for r in rows])]
    return last.float()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=pathlib.Path)
    parser.add_argument("--holdout", type=float, default=0.0, help="share of dev pairs kept out")
    args = parser.parse_args(argv)
    started = time.monotonic()
    if args.holdout:
        _write(args.target, schedule=Schedule(), holdout=args.holdout)
    else:
        build_tagger_model(args.target)
    print(f"built in {time.monotonic() - started:.0f} s")
    model = AutoModelForCausalLM.from_pretrained(args.target)
    tokenizer = AutoTokenizer.from_pretrained(args.target)
    task = load_task(TASK)
    kept, held = _split(dataset_rows("dev"), args.holdout)
    for name, rows in (
        ("dev (trained on)", kept),
        ("dev held out", held),
        ("test", dataset_rows("test")),
    ):
        if rows:
            print(f"{name}: {code_report(model, task, tokenizer, rows)}")


if __name__ == "__main__":
    main()
