"""The gateway's log lines: configured once per process, and exceptions told by where they came
from, never by their message, which may quote a child's text."""

from __future__ import annotations

import logging
import traceback


def configure_logging(level: str) -> None:
    """The gateway's own log lines, in this process (each worker process calls it too)."""
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )


def frames(exc: BaseException) -> str:
    """Where an exception came from, without its message (which may quote request text)."""
    return "".join(traceback.format_tb(exc.__traceback__))
