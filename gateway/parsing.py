"""From request bytes to a validated `UpstreamRequest`, or an `InvalidRequest` naming the field."""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from backends.base import Route
from gateway.errors import InvalidRequest, MalformedJSON
from gateway.schemas import ChatCompletionRequest, CompletionRequest

SCHEMAS: dict[Route, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    Route.CHAT: ChatCompletionRequest,
    Route.COMPLETIONS: CompletionRequest,
}


def parse_body(
    route: Route, raw: bytes
) -> tuple[dict[str, Any], ChatCompletionRequest | CompletionRequest]:
    """Parses and validates a body; returns it as a dict and as its validated model."""
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJSON(f"the request body is not valid JSON: {_position(exc)}") from None
    if not isinstance(payload, dict):
        raise InvalidRequest("the request body must be a JSON object")
    try:
        request = SCHEMAS[route].model_validate_json(raw)
    except ValidationError as exc:
        raise _invalid(exc) from None
    return payload, request


def _position(exc: orjson.JSONDecodeError) -> str:
    # The decoder's message can quote the body; only its position is safe to echo.
    return f"line {exc.lineno} column {exc.colno}"


def _invalid(error: ValidationError) -> InvalidRequest:
    problem = error.errors(include_url=False, include_input=False, include_context=False)[0]
    param = ".".join(str(part) for part in problem["loc"]) or None
    kind = problem["type"]
    if kind == "extra_forbidden":
        message = f"unknown field '{param}'"
    elif kind == "missing":
        message = f"'{param}' is required"
    else:
        message = f"invalid '{param}': {problem['msg']}" if param else problem["msg"]
    return InvalidRequest(message, param=param, code=kind)
