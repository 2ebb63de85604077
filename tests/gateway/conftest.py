"""Fixtures of the gateway's own tests."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import pytest

from tests.support.loops import LOOP_KINDS, Scenario, run_on


@pytest.fixture(params=LOOP_KINDS)
def run(request: pytest.FixtureRequest) -> Callable[[Scenario], None]:
    """Runs a scenario on each event loop the gateway may run on (the test runs once per loop)."""
    return partial(run_on, request.param)
