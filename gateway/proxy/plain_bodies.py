"""The request bodies most clients send, found valid by a few type checks instead of pydantic.

Example::

    if is_plain(Route.CHAT, payload):  # {"model": "m", "messages": [...], "stream": true}
        ...  # valid: the strict models of gateway.proxy.schemas accept it, no need to run them

A plain body holds only the fields below, each of the simplest shape its schema allows (text
messages; a `response_format` of `text` or `json_object` and nothing else). Any other body,
valid or not, is not plain, and the models decide it and name what is wrong.

Why: pydantic's validation of the chat models is cheap when warm and expensive after a pause,
far more so than these checks (benchmarks/README.md, "A step after a pause"). A gateway serving
one stream at a time, or one request every few milliseconds, always runs it cold. Each check
here accepts a subset of what its field accepts; `tests/gateway/proxy/test_plain_bodies.py`
holds them to that against the models.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backends.base import Route

ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PLAIN_FORMATS = frozenset({"text", "json_object"})
MESSAGE_KEYS = frozenset({"role", "content", "name"})

Check = Callable[[Any], bool]


def _bool(value: Any) -> bool:
    return type(value) is bool


def _int_in(low: int, high: int) -> Check:
    # bool is a subclass of int in Python, and the strict models refuse it for an int.
    return lambda value: type(value) is int and low <= value <= high


def _number_in(low: float, high: float, *, above_low: bool = False) -> Check:
    # A JSON integer is a valid number; orjson never makes NaN, and inf fails the bounds.
    def check(value: Any) -> bool:
        if type(value) is not float and type(value) is not int:
            return False
        return (low < value if above_low else low <= value) and value <= high

    return check


def _text(longest: int, shortest: int = 0) -> Check:
    return lambda value: type(value) is str and shortest <= len(value) <= longest


def _stop(value: Any) -> bool:
    if type(value) is str:
        return True
    return type(value) is list and len(value) <= 64 and all(type(s) is str for s in value)


def _one_of(value: Any, choices: frozenset[str]) -> bool:
    return type(value) is str and value in choices  # `in` a set raises on a list or a dict


def _response_format(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and _one_of(value.get("type"), PLAIN_FORMATS)


def _stream_options(value: Any) -> bool:
    return (
        type(value) is dict
        and value.keys() <= {"include_usage"}
        and all(type(item) is bool for item in value.values())
    )


def _str(value: Any) -> bool:
    return type(value) is str


def _messages(value: Any) -> bool:
    if type(value) is not list or not value:
        return False
    for message in value:
        if (
            type(message) is not dict
            or type(message.get("content")) is not str
            or not _one_of(message.get("role"), ROLES)
            or not message.keys() <= MESSAGE_KEYS
            or ("name" in message and type(message["name"]) is not str)
        ):
            return False
    return True


_SHARED: dict[str, Check] = {
    "model": _text(512, shortest=1),
    "stream": _bool,
    "stream_options": _stream_options,
    "max_tokens": _int_in(1, 1_000_000),
    "n": _int_in(1, 128),
    "temperature": _number_in(0.0, 2.0),
    "top_p": _number_in(0.0, 1.0, above_low=True),
    "seed": _int_in(-(2**63), 2**63 - 1),
    "stop": _stop,
    "user": _text(256),
    "response_format": _response_format,
}
# Per route: the checks, and the fields a body must have.
PLAIN: dict[Route, tuple[dict[str, Check], tuple[str, ...]]] = {
    Route.CHAT: (
        {**_SHARED, "messages": _messages, "max_completion_tokens": _int_in(1, 1_000_000)},
        ("model", "messages"),
    ),
    Route.COMPLETIONS: ({**_SHARED, "prompt": _str}, ("model", "prompt")),
}


def is_plain(route: Route, payload: dict[str, Any]) -> bool:
    """Whether every field of `payload` passes its check and the required ones are there."""
    checks, required = PLAIN[route]
    for key, value in payload.items():
        check = checks.get(key)
        if check is None or not check(value):
            return False
    return all(key in payload for key in required)
