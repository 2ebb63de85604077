"""Client API keys: compared as SHA-256 digests in constant time; never logged."""

from __future__ import annotations

import hashlib
import hmac

from backends.errors import AuthenticationFailed


class KeyCheck:
    """Accepts a request when its Bearer key hashes to one of the configured digests."""

    def __init__(self, digests: list[bytes]) -> None:
        self._digests = tuple(digests)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def verify(self, authorization: bytes | None) -> bytes:
        """The presented key's SHA-256 digest (b"" when no key is required): who is asking,
        for per-key limits. Raises `AuthenticationFailed` for a missing or unknown key."""
        if not self._digests:
            return b""
        if authorization is None or not authorization[:7].lower() == b"bearer ":
            raise AuthenticationFailed("an API key is required: send 'Authorization: Bearer <key>'")
        presented = hashlib.sha256(authorization[7:].strip()).digest()
        # Check every digest, so the time taken does not tell which key was close.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(digest, presented)
        if not matched:
            raise AuthenticationFailed("the API key is not valid")
        return presented
