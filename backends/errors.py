"""One error hierarchy for the gateway, rendered as OpenAI error JSON in one place.

    GatewayError (500 internal_error)
    ├── InvalidRequest (400 invalid_request_error)
    │   ├── MalformedJSON (400)
    │   ├── UnsupportedParameter (400: the backend cannot honour a field)
    │   ├── BodyTooLarge (413)
    │   └── MethodNotAllowed (405: a hot route asked with another method than POST)
    ├── AuthenticationFailed (401)
    ├── NotFound (404: unknown model or route)
    ├── UpstreamRejected (the upstream's own 4xx, passed through)
    ├── Overloaded (429: a backend's concurrency limit and wait are exhausted)
    │   └── RateLimited (429: a client's own limit, per key or route, is reached)
    ├── BackendUnavailable (503: unreachable, not ready, circuit open)
    ├── BackendTimeout (504)
    └── BackendProtocolError (502: the upstream answered something unusable)

Adapters translate their transport errors into these at their boundary (`raise ... from exc`).
Statuses are chosen for the SDKs' retry logic: 429/5xx are retried by clients, 4xx are not.
"""

from __future__ import annotations

from typing import ClassVar

import orjson


class GatewayError(Exception):
    """Base error: an HTTP status, an OpenAI error `type`, and an optional `param`/`code`."""

    status: ClassVar[int] = 500
    default_type: ClassVar[str] = "internal_error"
    default_code: ClassVar[str | None] = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.error_type = self.default_type
        self.headers = headers or {}
        self.retryable = False  # safe to send again: nothing reached or ran on the engine
        self.endpoint: str | None = None  # the endpoint of a replica pool that failed, if one

    @property
    def status_code(self) -> int:
        return self.status

    def to_dict(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())

    def to_sse(self) -> bytes:
        """The same error as one server-sent event, for failures after a stream has begun."""
        return b"data: " + self.to_json() + b"\n\n"


class InvalidRequest(GatewayError):
    status = 400
    default_type = "invalid_request_error"


class MalformedJSON(InvalidRequest):
    default_code = "invalid_json"


class UnsupportedParameter(InvalidRequest):
    default_code = "unsupported_parameter"


class BodyTooLarge(InvalidRequest):
    status = 413
    default_code = "request_too_large"


class MethodNotAllowed(InvalidRequest):
    """Carries the `Allow` header a 405 must have; `code` is null, as in OpenAI's answer."""

    status = 405

    def __init__(self, method: str, path: str, allow: str = "POST") -> None:
        super().__init__(
            f"Invalid method for URL ({method} {path}); use {allow}", headers={"Allow": allow}
        )


class AuthenticationFailed(GatewayError):
    status = 401
    default_type = "authentication_error"
    default_code = "invalid_api_key"


class NotFound(GatewayError):
    status = 404
    default_type = "invalid_request_error"
    default_code = "not_found"


class UpstreamRejected(GatewayError):
    """An upstream 4xx (bad input as the engine saw it), passed through with its message."""

    default_type = "invalid_request_error"

    def __init__(
        self,
        upstream_status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message, param=param, code=code)
        self.upstream_status = upstream_status
        if error_type:
            self.error_type = error_type

    @property
    def status_code(self) -> int:
        return self.upstream_status


class Overloaded(GatewayError):
    status = 429
    default_type = "rate_limit_error"
    default_code = "overloaded"


class RateLimited(Overloaded):
    """A client used its requests, tokens or slots (`gateway.ratelimit`); its `type` names
    which, as OpenAI's does (`requests`, `tokens`)."""

    default_code = "rate_limit_exceeded"


class BackendUnavailable(GatewayError):
    status = 503
    default_type = "service_unavailable"
    default_code = "backend_unavailable"


class BackendTimeout(GatewayError):
    status = 504
    default_type = "timeout"
    default_code = "backend_timeout"


class BackendProtocolError(GatewayError):
    status = 502
    default_type = "bad_gateway"
    default_code = "backend_protocol_error"
