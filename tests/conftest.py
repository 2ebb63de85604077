"""Shared fixtures: servers start once per test run and listen on free ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.fake_upstream import FakeUpstream
from tests.support.servers import ThreadedServer


@pytest.fixture(scope="session")
def fake_upstream() -> Iterator[tuple[FakeUpstream, ThreadedServer]]:
    app = FakeUpstream()
    with ThreadedServer(app) as server:
        yield app, server
