"""Hostile HTTP at a real gateway (its own HTTP protocol, under uvicorn) in front of the fake
upstream: lying lengths, chunked bodies, HTTP/1.0, wrong methods and content types, query
strings, CORS.

Every refusal the gateway makes is OpenAI error JSON; the one exception is the HTTP protocol's
plain 400 (or 431) for bytes that are not HTTP, sent before the gateway sees a request.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.support.fake_upstream import MODEL, FakeUpstream
from tests.support.servers import ThreadedServer

Fake = tuple[FakeUpstream, ThreadedServer]
LIMIT = 4096
CHILD = "con tên là Bống, nhà con ở số 12"
BODY = orjson.dumps({"model": MODEL, "messages": [{"role": "user", "content": CHILD}]})
HOT = ["/v1/chat/completions", "/v1/completions"]


@pytest.fixture(scope="module")
def gateway(fake_upstream: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    records = tmp_path_factory.mktemp("records") / "pairs.db"
    backend = VllmSettings(
        url=fake_upstream[1].url, read_timeout=2.0, total_timeout=5.0, circuit_failures=1000
    )
    settings = Settings(
        backends={"vllm": backend},
        primary="vllm",
        max_body_bytes=LIMIT,
        records_url=f"sqlite:///{records}",
    )
    with ThreadedServer(create_app(settings)) as server:
        yield server.url
        assert httpx.get(server.url + "/health").status_code == 200  # still up after it all


def openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    """The response is `status` with an OpenAI error body that does not quote the request."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    body = response.json()
    assert list(body) == ["error"]
    error: dict[str, object] = body["error"]
    assert sorted(error) == ["code", "message", "param", "type"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert error["code"] is None or isinstance(error["code"], str)
    assert error["param"] is None or isinstance(error["param"], str)
    assert CHILD not in response.text
    return error


def exchange(url: str, request: bytes, *, hang_up: bool = False, wait: float = 5.0) -> bytes:
    """Raw bytes to the server and what comes back before it closes (or `wait` runs out)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(request)
        if hang_up:
            return b""
        sock.settimeout(wait)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
        return received


def post_head(path: str, length: int | str, *extra: bytes, version: bytes = b"1.1") -> bytes:
    lines = [b"POST " + path.encode() + b" HTTP/" + version, b"Host: gateway", b"Connection: close"]
    lines += [b"Content-Length: " + str(length).encode(), *extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def chunked(body: bytes, size: int = 1000) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def padded(size: int) -> bytes:
    """A valid chat body of exactly `size` bytes: a gigantic string within the limit."""
    head = BODY.removesuffix(b'"}]}')
    return head + b"x" * (size - len(BODY)) + b'"}]}'


@pytest.mark.parametrize("path", HOT)
def test_body_over_the_limit_is_413_sent_whole(gateway: str, path: str) -> None:
    error = openai_error(httpx.post(gateway + path, content=padded(LIMIT + 1)), 413)
    assert error["code"] == "request_too_large"


def test_body_over_the_limit_is_413_sent_chunked(gateway: str) -> None:
    response = httpx.post(gateway + HOT[0], content=chunked(padded(3 * LIMIT)))
    assert openai_error(response, 413)["code"] == "request_too_large"


def test_body_at_the_limit_is_served_whole_or_chunked(gateway: str) -> None:
    assert httpx.post(gateway + HOT[0], content=padded(LIMIT)).status_code == 200
    assert httpx.post(gateway + HOT[0], content=chunked(padded(LIMIT))).status_code == 200


def test_a_declared_length_is_not_trusted(gateway: str) -> None:
    """A client that claims a terabyte is refused once the real bytes pass the limit."""
    started = time.monotonic()
    answer = exchange(gateway, post_head(HOT[0], 10**12) + padded(LIMIT + 1), wait=3.0)
    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b'"request_too_large"' in answer
    assert time.monotonic() - started < 3.0  # answered at once, not after the claimed bytes


def test_a_body_that_never_completes_never_reaches_the_engine(
    gateway: str, fake_upstream: Fake
) -> None:
    before = fake_upstream[0].calls
    exchange(gateway, post_head(HOT[0], len(BODY) + 100) + BODY, hang_up=True)
    time.sleep(0.3)
    assert fake_upstream[0].calls == before
    assert 'status="499"' in httpx.get(gateway + "/metrics").text  # counted as client gone


def test_a_declared_length_shorter_than_the_body_is_a_400(gateway: str) -> None:
    """The bytes past the declared length are read as the next request, which is not HTTP."""
    answer = exchange(gateway, post_head(HOT[0], 10) + BODY)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert CHILD.encode() not in answer


@pytest.mark.parametrize(
    "head",
    [
        post_head(HOT[0], 5, b"Transfer-Encoding: chunked"),  # both: request smuggling
        post_head(HOT[0], "12abc"),
        post_head(HOT[0], -1),
    ],
)
def test_contradictory_framing_is_refused_by_the_http_parser(gateway: str, head: bytes) -> None:
    answer = exchange(gateway, head + b"0\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"connection: close" in answer


def test_an_http_1_0_client_is_served(gateway: str) -> None:
    answer = exchange(gateway, post_head(HOT[0], len(BODY), version=b"1.0") + BODY)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"connection: close" in head
    assert orjson.loads(body)["choices"][0]["message"]["content"] == "hello from fake"


def test_an_http_1_0_client_can_read_a_stream(gateway: str) -> None:
    body = orjson.dumps(
        {"model": MODEL, "messages": [{"role": "user", "content": CHILD}], "stream": True}
    )
    answer = exchange(gateway, post_head(HOT[0], len(body), version=b"1.0") + body)
    head, _, events = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding" not in head  # HTTP/1.0 knows no chunks: the close ends it
    assert events.startswith(b"data: {")
    assert events.endswith(b"data: [DONE]\n\n")


def test_an_http_1_0_client_without_a_body_gets_openai_json(gateway: str) -> None:
    answer = exchange(gateway, b"POST /v1/chat/completions HTTP/1.0\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert orjson.loads(body)["error"]["code"] == "invalid_json"


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (CHILD.encode() + b"\xff\xfe\xc0\xaf", "application/json"),
        (b"model=" + MODEL.encode() + b"&messages=hi", "application/x-www-form-urlencoded"),
        (b"--b\r\nContent-Disposition: form-data; name=m\r\n\r\nm\r\n--b--", "multipart/form-data"),
        (b"", "application/json"),
        (b"\x00" * 100, "application/octet-stream"),
    ],
)
def test_a_body_that_is_not_json_is_a_400(gateway: str, content: bytes, content_type: str) -> None:
    response = httpx.post(gateway + HOT[0], content=content, headers={"content-type": content_type})
    assert openai_error(response, 400)["code"] == "invalid_json"


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", ""])
def test_json_is_read_whatever_the_content_type_says(gateway: str, content_type: str) -> None:
    """Like the OpenAI API; `curl -d` sends a form content type."""
    response = httpx.post(gateway + HOT[0], content=BODY, headers={"content-type": content_type})
    assert response.status_code == 200


def test_a_query_string_is_ignored(gateway: str) -> None:
    response = httpx.post(gateway + HOT[0] + "?api-version=2024-02-01&model=nope", content=BODY)
    assert response.status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH", "OPTIONS"])
@pytest.mark.parametrize("path", HOT)
def test_a_wrong_method_on_a_hot_route_is_an_openai_4xx(
    gateway: str, method: str, path: str
) -> None:
    response = httpx.request(method, gateway + path, content=BODY)
    openai_error(response, 405)
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize("path", HOT)
def test_a_wrong_method_on_a_hot_route_is_405_with_allow(gateway: str, path: str) -> None:
    response = httpx.get(gateway + path)
    openai_error(response, 405)
    assert response.headers["allow"] == "POST"


@pytest.mark.parametrize(("method", "path"), [("POST", "/health"), ("DELETE", "/v1/models")])
def test_a_wrong_method_on_an_admin_route_is_405_with_allow(
    gateway: str, method: str, path: str
) -> None:
    response = httpx.request(method, gateway + path)
    openai_error(response, 405)
    assert response.headers["allow"] == "GET"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/models", "/health", "/nothing"])
def test_cors_is_off(gateway: str, path: str) -> None:
    origin = {"origin": "https://evil.example"}
    preflight = {**origin, "access-control-request-method": "POST"}
    for response in (
        httpx.post(gateway + path, content=BODY, headers=origin),
        httpx.get(gateway + path, headers=origin),
        httpx.options(gateway + path, headers=preflight),
    ):
        assert not [name for name in response.headers if name.startswith("access-control-")]
    assert httpx.options(gateway + path, headers=preflight).status_code >= 400
