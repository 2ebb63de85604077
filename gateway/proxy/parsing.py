"""From request bytes to a validated request, or an `InvalidRequest` naming the field.

A body holds children's writing, so errors name fields and never repeat values; a field name
that is not a plain identifier is not repeated either. The body is parsed once, by orjson, and
the model validates that parse: the gateway and the engine cannot read two different requests
out of one body (duplicate keys: the last wins in orjson and in the engines' parsers alike).
Plain bodies, the shapes most clients send, skip the model: `gateway.proxy.plain_bodies` finds them
valid by a few type checks, for much less than the model costs when it runs cold.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from backends.base import Route
from backends.errors import InvalidRequest, MalformedJSON
from backends.values import value_class
from gateway.proxy.plain_bodies import is_plain
from gateway.proxy.schemas import ChatCompletionRequest, CompletionRequest

SCHEMAS: dict[Route, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    Route.CHAT: ChatCompletionRequest,
    Route.COMPLETIONS: CompletionRequest,
}
MAX_DEPTH = 64  # nested objects and arrays; OpenAI bodies need fewer than 10

_PLAIN_NAME = re.compile(r"[A-Za-z0-9_\-]{1,64}")
# pydantic names the branch of a union in an error's location: ('stop', 'list[str]').
_BRANCH = re.compile(r"str|int|float|bool|none|[a-z]+\[.+\]")
_HIDDEN = "*"
_EXPECTED = {
    "string_type": "a valid string",
    "int_type": "a valid integer",
    "float_type": "a valid number",
    "bool_type": "a valid boolean",
    "list_type": "an array",
    "dict_type": "an object",
    "model_type": "an object",
}


@value_class
class Parsed:
    """A valid body, and the two fields the gateway routes by."""

    payload: dict[str, Any]
    model: str
    stream: bool


def parse_body(route: Route, raw: bytes) -> Parsed:
    """Parses and validates a body."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the request body is not valid JSON: {_position(exc)}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_type")
    if is_plain(route, payload):  # valid, and three levels deep at most
        return Parsed(payload, payload["model"], payload.get("stream", False))
    try:
        request = SCHEMAS[route].model_validate(payload)  # never descends into open values
    except ValidationError as exc:
        raise _invalid(exc) from None
    # Brackets bound the depth, and of the messages side by side only one is on the deepest
    # path: counting is cheap, so only a body that may be deep is walked.
    siblings = len(request.messages) - 1 if isinstance(request, ChatCompletionRequest) else 0
    if raw.count(b"{") + raw.count(b"[") - siblings > MAX_DEPTH and nests_deeper(payload):
        raise InvalidRequest(
            f"the request body nests objects and arrays deeper than {MAX_DEPTH} levels",
            code="too_deep",
        )
    return Parsed(payload, request.model, request.stream)


def nests_deeper(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and arrays nest more than `limit` levels (the top one is level 1)."""
    level = [value]
    for _ in range(limit):
        below = []
        for node in level:
            for child in node.values() if type(node) is dict else node:
                if type(child) is dict or type(child) is list:  # all orjson makes
                    below.append(child)
        if not below:
            return False
        level = below
    return True


def _position(exc: orjson.JSONDecodeError) -> str:
    # The decoder's message can quote the body; only its position is safe to echo.
    return f"line {exc.lineno} column {exc.colno}"


def _invalid(error: ValidationError) -> InvalidRequest:
    problems = error.errors(include_url=False, include_input=False, include_context=False)
    # A union reports one problem per branch; the branch that got deepest is the one meant.
    head = _before_branch(problems[0]["loc"])
    branches = [p for p in problems if p["loc"][: len(head)] == head]
    problem = max(branches, key=lambda p: (len(_path(p)), p["type"] not in _EXPECTED))
    path = _path(problem)
    param = ".".join(path) or None
    kind = problem["type"]
    if kind == "extra_forbidden":
        shown = path[-1] != _HIDDEN
        message = f"unknown field '{param}'" if shown else "unknown field (its name not repeated)"
    elif kind == "missing":
        message = f"'{param}' is required"
    elif kind in _EXPECTED:
        expected = (_EXPECTED.get(p["type"]) for p in branches if _path(p) == path)
        wanted = " or ".join(dict.fromkeys(e for e in expected if e is not None))
        message = f"invalid '{param}': Input should be {wanted}" if param else problem["msg"]
    else:
        message = f"invalid '{param}': {problem['msg']}" if param else problem["msg"]
    return InvalidRequest(message, param=param, code=kind)


def _before_branch(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    for index, part in enumerate(loc):
        if index and isinstance(part, str) and _BRANCH.fullmatch(part):
            return loc[:index]
    return loc


def _path(problem: ErrorDetails) -> list[str]:
    """The location as the client wrote it: union branches dropped, odd names hidden."""
    parts = []
    for index, part in enumerate(problem["loc"]):
        if isinstance(part, int):
            parts.append(str(part))
        elif index and _BRANCH.fullmatch(part):
            continue
        else:
            parts.append(part if _PLAIN_NAME.fullmatch(part) else _HIDDEN)
    return parts
