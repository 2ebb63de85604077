"""Request smuggling and malformed framing: each vector of `smuggling_vectors.py` (built from
RFC 9112: no published corpus is on the registries here, see there) sent as raw bytes to a real
gateway, which must give the strict answer: 400 and close (431 for an oversized head), without
the refused request, or anything pipelined after it, reaching the engine.

The same bytes go to nginx (Debian's package) in front of its own `return 200`, and its answers
are recorded below; `test_nginx_answers_as_recorded` keeps the record true. nginx is lenient
where the gateway is strict: it accepts bare LF line ends, control bytes in values, malformed
chunk extensions (it ignores them) and a space after a chunk size; it answers 501 to a transfer
coding it does not know, where the gateway answers 400 (the issue's strict answer; RFC 9112 6.1
allows either for a coding not understood, and requires 400 when chunked is not last). An
oversized head is 431 here, 400 or 414 there (nginx's limit is 8 kB a line, 32 kB in all).

| vector | RFC 9112 | strict answer (the gateway) | nginx 1.22.1 |
|---|---|---|---|
| ok length | 6.2 | 200, open | 200, open |
| ok chunked | 7.1 | 200, open | 200, open |
| ok chunk extension | 7.1.1 | 200, open | 200, open |
| CL then TE | 6.3 (3): MAY reject; here always | 400, closed | 400, closed |
| TE then CL | 6.3 (3) | 400, closed | 400, closed |
| CL twice, equal | 6.3 (5): MAY accept equal; here never | 400, closed | 400, closed |
| CL twice, different | 6.3 (5): MUST 400 | 400, closed | 400, closed |
| CL as a list | 6.3 (5) | 400, closed | 400, closed |
| CL with a sign | 8.6 (RFC 9110): 1*DIGIT | 400, closed | 400, closed |
| CL in hex | 8.6 (RFC 9110) | 400, closed | 400, closed |
| CL overflow | 6.3 (5) | 400, closed | 400, closed |
| CL, space before colon | 5.1: MUST 400 | 400, closed | 400, closed |
| TE gzip | 6.1: 501 or 400 | 400, closed | 501, closed (differs) |
| TE chunked, gzip | 6.3 (4): chunked not last, MUST 400 | 400, closed | 501, closed (differs) |
| TE gzip, chunked | 6.1: a coding not understood | 400, closed | 501, closed (differs) |
| TE identity | 6.1 (identity is gone) | 400, closed | 501, closed (differs) |
| TE chunked, chunked | 7: MUST NOT apply chunked twice | 400, closed | 501, closed (differs) |
| TE twice | 7 | 400, closed | 400, closed |
| TE xchunked | 6.1 | 400, closed | 501, closed (differs) |
| TE behind a vertical tab | 5.5 (RFC 9110): field-value | 400, closed | 501, closed (differs) |
| TE, space before colon | 5.1: MUST 400 | 400, closed | 400, closed |
| TE in HTTP/1.0 | 6.1: framing faulty, MUST close | 400, closed | 400, closed |
| obs-fold | 5.2: 400 or replace | 400, closed | 400, closed |
| obs-fold into TE | 5.2 | 400, closed | 400, closed |
| whitespace before the first field | 2.2: MUST reject or ignore | 400, closed | 400, closed |
| chunk size 5x | 7.1: 1*HEXDIG | 400, closed | 400, closed |
| chunk size negative | 7.1 | 400, closed | 400, closed |
| chunk size 0x | 7.1 | 400, closed | 400, closed |
| chunk size, space before | 7.1 | 400, closed | 400, closed |
| chunk size, space after | 7.1.1: BWS only before ';' | 400, closed | 200, open (differs) |
| chunk size overflow | 7.1: MUST anticipate overflow | 400, closed | 400, closed |
| chunk longer than its size | 7.1 | 400, closed | 400, closed |
| chunk without its CRLF | 7.1 | 400, closed | 400, closed |
| chunk extension without a name | 7.1.1: token | 400, closed | 200, open (differs) |
| chunk extension with NUL | 7.1.1 | 400, closed | 200, open (differs) |
| chunk extension, bare LF | 2.2 | 400, closed | 200, open (differs) |
| chunk extension, open quote | 7.1.1: quoted-string | 400, closed | 200, open (differs) |
| chunk extension, bare CR | 2.2: bare CR invalid | 400, closed | 400, closed |
| chunk extension of 100 kB | 7.1.1: ignored, in the body timeouts | 200, open | 200, open |
| bare LF after the request line | 2.2: MAY accept; here never | 400, closed | 200, open (differs) |
| bare LF after a field | 2.2 | 400, closed | 200, open (differs) |
| bare LF ends the head | 2.2 | 400, closed | 200, open (differs) |
| bare LF after a chunk size | 2.2 | 400, closed | 200, open (differs) |
| bare LF after chunk data | 2.2 | 400, closed | 200, open (differs) |
| bare CR in a value | 2.2: MUST reject or replace | 400, closed | 400, closed |
| NUL in a name | 5.1: token | 400, closed | 400, closed |
| NUL in a value | 5.5 (RFC 9110): MUST reject or replace | 400, closed | 400, closed |
| SOH in a value | 5.5 (RFC 9110) | 400, closed | 200, open (differs) |
| DEL in a value | 5.5 (RFC 9110) | 400, closed | 200, open (differs) |
| space in a name | 5.1: token | 400, closed | 400, closed |
| empty name | 5.1: token | 400, closed | 400, closed |
| control byte in the target | 3.2 | 400, closed | 400, closed |
| HTTP/1.1 without Host | 3.2: MUST 400 | 400, closed | 400, closed |
| two Hosts | 3.2: MUST 400 | 400, closed | 400, closed |
| smuggled behind CL+TE | 6.3: nothing after a refusal is read | 400, closed | 400, closed |
| smuggled in a chunk | 7.1 | 400, closed | 400, closed |
| good, then bad | 6.3: answered, then 400 | 200, 400, closed | 200, 400, closed |
| a 70 kB field | RFC 6585 431; nginx: 400 past 8 kB | 431, closed | 400, closed (differs) |
| a 70 kB target | 3: 414 or 431 | 431, closed | 414, closed (differs) |
| 1,000 fields | 431 past 64 kB in all | 431, closed | 400, closed (differs) |
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from backends.vllm import VllmSettings
from gateway.app import create_app
from gateway.settings import Settings
from tests.gateway.http.smuggling_vectors import VECTORS, Answer, Vector, table
from tests.support.fake_upstream import FakeUpstream
from tests.support.nginx import nginx, nginx_version
from tests.support.servers import ThreadedServer

Fake = tuple[FakeUpstream, ThreadedServer]
Address = tuple[str, int]
QUIET = 1.0  # seconds of silence after which a connection counts as kept open
RECORDED_NGINX = "1.22.1"
STATUS_LINE = re.compile(rb"HTTP/1\.[01] (\d{3}) ")  # a response may follow a body directly


@pytest.fixture(scope="module")
def gateway(fake_upstream: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Address]:
    records = tmp_path_factory.mktemp("records") / "pairs.db"
    backend = VllmSettings(url=fake_upstream[1].url, circuit_failures=1000)
    settings = Settings(
        backends={"vllm": backend}, primary="vllm", records_url=f"sqlite:///{records}"
    )
    with ThreadedServer(create_app(settings)) as server:
        host, port = server.url.removeprefix("http://").split(":")
        yield host, int(port)


def exchange(address: Address, data: bytes) -> Answer:
    """`data` sent on a new connection; the statuses that came back, and whether it closed."""
    with socket.create_connection(address) as sock:
        sock.settimeout(QUIET)
        received, closed = b"", False
        try:
            sock.sendall(data)
            while chunk := sock.recv(65536):
                received += chunk
            closed = True
        except TimeoutError:
            pass
        except (BrokenPipeError, ConnectionResetError):
            closed = True  # refused while the rest was still on its way
    return Answer(tuple(int(code) for code in STATUS_LINE.findall(received)), closed)


def exchanges(address: Address) -> dict[str, Answer]:
    """Every vector, each on its own connection, all at once: a connection kept open takes
    `QUIET` to tell, and one after another they took 20 s."""
    with ThreadPoolExecutor(len(VECTORS)) as sending:
        answers = sending.map(lambda vector: exchange(address, vector.data), VECTORS)
        return {vector.name: answer for vector, answer in zip(VECTORS, answers, strict=True)}


@pytest.mark.parametrize("vector", VECTORS, ids=[vector.name for vector in VECTORS])
def test_each_vector_gets_the_strict_answer(
    gateway: Address, fake_upstream: Fake, vector: Vector
) -> None:
    calls = fake_upstream[0].calls
    assert exchange(gateway, vector.data) == vector.strict
    served = vector.strict.statuses.count(200)
    assert fake_upstream[0].calls == calls + served  # nothing refused reached the engine


@pytest.mark.slow
def test_nginx_answers_as_recorded(
    gateway: Address, tmp_path: Path, run_summary: list[str]
) -> None:
    """Both servers get the same bytes; their answers go to a table beside the test's temporary
    folder, and nginx's must be those recorded above (a newer nginx that answers otherwise
    fails here until the record says what it does)."""
    with nginx(tmp_path) as address:
        live = exchanges(address)
    ours = exchanges(gateway)
    version = nginx_version()
    rows = [f"| {name} | {ours[name]} | {answer} |" for name, answer in live.items()]
    notes = tmp_path.parent / "smuggling-vs-nginx.md"
    notes.write_text("\n".join([f"| vector | gateway | nginx {version} |", "|---|---|---|", *rows]))
    run_summary.append(f"smuggling vectors, the gateway's answers and nginx's: {notes}")
    assert ours == {vector.name: vector.strict for vector in VECTORS}
    differ = {name: str(answer) for name, answer in live.items() if answer != _recorded(name)}
    assert differ == {}, f"nginx {version} answers otherwise than {RECORDED_NGINX} did"


def _recorded(name: str) -> Answer:
    return next(vector.nginx for vector in VECTORS if vector.name == name)


def test_the_table_above_is_the_vectors() -> None:
    assert __doc__ is not None
    assert table() in __doc__
