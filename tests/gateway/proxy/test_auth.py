"""API keys: Bearer, compared by digest."""

from __future__ import annotations

import hashlib

import pytest

from backends.errors import AuthenticationFailed
from gateway.proxy.auth import KeyCheck


def test_no_keys_means_open() -> None:
    KeyCheck([]).verify(None)


@pytest.mark.parametrize("header", [None, b"", b"Basic abc", b"Bearer wrong", b"Bearer "])
def test_missing_or_wrong_key_is_refused(header: bytes | None) -> None:
    check = KeyCheck([hashlib.sha256(b"secret").digest()])
    with pytest.raises(AuthenticationFailed) as caught:
        check.verify(header)
    assert caught.value.status_code == 401
    assert b"secret" not in caught.value.to_json()


def test_right_key_passes_in_any_case_of_bearer() -> None:
    check = KeyCheck([hashlib.sha256(b"other").digest(), hashlib.sha256(b"secret").digest()])
    check.verify(b"Bearer secret")
    check.verify(b"bearer secret")
