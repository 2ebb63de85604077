"""What an operator does to a running gateway during the soak: reload its configuration every
``every`` seconds (``POST /admin/reload``, as SIGHUP does), which builds every backend's pool
anew while requests are in flight."""

import asyncio
import time
from dataclasses import dataclass

import aiohttp

ADMIN_TOKEN = "soak-admin-token-0123456789"


@dataclass(frozen=True)
class Reload:
    """One reload: when it was asked (monotonic s), its status, how long it took."""

    at: float
    status: int
    seconds: float


async def reloads(url: str, every: float, start: float, until: float) -> list[Reload]:
    """A reload at ``start + every``, ``start + 2 every``, ... before ``until``."""
    done = []
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession(headers=headers) as session:
        at = start + every
        while at < until:
            await asyncio.sleep(max(at - time.monotonic(), 0.0))
            asked = time.monotonic()
            try:
                async with session.post(url + "/admin/reload") as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError:
                status = 0
            done.append(Reload(asked, status, round(time.monotonic() - asked, 3)))
            at += every
    return done
