"""Endpoints from DNS: one name resolved to all its addresses (a Kubernetes headless Service
answers with the address of every ready pod), each address an endpoint at the URL's port.

Example::

    target = Target.of("http://vllm-headless.llm.svc:8000")
    names = await resolve(target)            # {"10.0.3.7:8000": "http://10.0.3.7:8000", ...}
"""

from __future__ import annotations

import asyncio
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True, slots=True)
class Target:
    """What to resolve, and how to write an endpoint's URL once resolved."""

    url: str
    host: str
    port: int

    @classmethod
    def of(cls, url: str) -> Target:
        """`url` in either form a kind reads: `scheme://host:port/...` or `host:port`."""
        if "://" in url:
            parts = urlsplit(url)
            default = 443 if parts.scheme == "https" else 80
            return cls(url, parts.hostname or "", parts.port or default)
        host, _, port = url.rpartition(":")
        return cls(url, host.strip("[]"), int(port))

    def endpoint(self, address: str) -> tuple[str, str]:
        """(name, url) of the endpoint at `address`, the URL in the configured form."""
        where = f"[{address}]:{self.port}" if ":" in address else f"{address}:{self.port}"
        if "://" not in self.url:
            return where, where
        parts = urlsplit(self.url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@{where}" if user else where
        return where, urlunsplit(parts._replace(netloc=netloc))


async def resolve(target: Target) -> dict[str, str]:
    """Every address the name has now, as {name: url}; `OSError` when it cannot be resolved."""
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    addresses = sorted({str(info[4][0]) for info in found})
    return dict(target.endpoint(address) for address in addresses)


def static_name(url: str) -> str:
    """The label of a listed endpoint: its host and port, never a password in its URL."""
    if "://" not in url:
        return url
    return urlsplit(url).netloc.rpartition("@")[2]
