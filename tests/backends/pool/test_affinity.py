"""backends.pool.affinity: the keys requests stick by, the same in every process."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

from backends.pool.affinity import digest, key_of, prompt_prefix, score

SYSTEM = {"role": "system", "content": "Bạn là Pika, gia sư toán. " * 40}


def chat(question: str, **fields: object) -> dict[str, object]:
    return {"messages": [SYSTEM, {"role": "user", "content": question}], **fields}


def test_requests_sharing_a_prefix_share_a_key_and_others_do_not() -> None:
    one = key_of(chat("7 + 5 = ?"), "prefix", 512)
    two = key_of(chat("chán quá"), "prefix", 512)
    assert one is not None
    assert one == two
    other = {"messages": [{"role": "system", "content": "another prompt " * 50}]}
    assert key_of(other, "prefix", 512) != one


def test_the_prefix_counts_roles_and_parts_in_order() -> None:
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "abc"}]}]}
    assert prompt_prefix(parts, 100) == "user\x00abc\x00"
    assert prompt_prefix({"prompt": "once upon a time"}, 4) == "once"
    assert prompt_prefix({"prompt": [[1, 2, 3]]}, 100) == "1,2,3"
    assert prompt_prefix({"prompt": 5}, 100) == ""


def test_user_affinity_reads_the_user_field_only() -> None:
    assert key_of(chat("x", user="child-17"), "user", 512) == digest("child-17")
    assert key_of(chat("x"), "user", 512) is None
    assert key_of(chat("x", user="child-17"), "none", 512) is None


def test_the_digest_is_blake2b_and_the_same_in_another_process() -> None:
    expected = int.from_bytes(hashlib.blake2b(b"child-17", digest_size=8).digest(), "big")
    assert digest("child-17") == expected
    code = "from backends.pool.affinity import digest, score; print(score(digest('a'), 42))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert int(other.stdout) == score(digest("a"), 42)
