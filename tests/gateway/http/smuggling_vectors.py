"""The request-smuggling and malformed-framing vectors of `test_smuggling.py`, from RFC 9112.

No published corpus or tool for these is on the package registries this project can use: the
HTTP Garden (narfindustries/http-garden) and smuggler.py are not on PyPI, and the PyPI
packages named after smuggling are scanners that need a live target and a network. So each
vector is built here from the RFC 9112 rule it breaks (cited per vector), in the shapes the
published research uses (CL.TE, TE.CL, TE.TE obfuscations, chunk-size and extension tricks,
bare LF and CR, control bytes, pipelined smuggles).

Every body is a valid chat request, so a vector whose framing is sound gets a real answer (the
controls, `ok`), and a refusal can only come from the framing.
"""

from __future__ import annotations

from dataclasses import dataclass

from tests.support.fake_upstream import MODEL

PATH = b"/v1/chat/completions"
BODY = b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":"hi"}]}'
SMUGGLED = b'{"model":"' + MODEL.encode() + b'","messages":[{"role":"user","content":"smuggled"}]}'


@dataclass(frozen=True)
class Answer:
    """What came back: the status of every response, in order, and whether the server closed
    the connection within the wait (else it kept it open)."""

    statuses: tuple[int, ...]
    closed: bool

    def __str__(self) -> str:
        codes = ", ".join(map(str, self.statuses)) or "nothing"
        return f"{codes}, {'closed' if self.closed else 'open'}"


REFUSED = Answer((400,), closed=True)


@dataclass(frozen=True)
class Vector:
    """One vector: its bytes, the RFC 9112 rule, the strict answer, and nginx's recorded one."""

    name: str
    data: bytes
    rule: str
    strict: Answer
    nginx: Answer  # nginx 1.22.1 (Debian 12), proxying to a `return 200`: what it answered


def post(*headers: bytes, body: bytes = BODY, version: bytes = b"1.1", host: bool = True) -> bytes:
    lines = [b"POST " + PATH + b" HTTP/" + version, *([b"Host: gateway"] if host else [])]
    return b"\r\n".join([*lines, *headers]) + b"\r\n\r\n" + body


def length(body: bytes = BODY) -> bytes:
    return b"Content-Length: %d" % len(body)


def chunked(body: bytes = BODY, size: bytes | None = None, tail: bytes = b"\r\n") -> bytes:
    """`body` as one chunk (its size line as given, else in hex), then the last chunk."""
    line = size if size is not None else b"%x" % len(body)
    return line + b"\r\n" + body + tail + b"0\r\n\r\n"


TE = b"Transfer-Encoding: chunked"
OK = Answer((200,), closed=False)
N400 = Answer((400,), closed=True)
N200 = Answer((200,), closed=False)
N501 = Answer((501,), closed=True)

VECTORS = [
    # --- controls: sound framing is served ---
    Vector("ok length", post(length()), "6.2", OK, N200),
    Vector("ok chunked", post(TE, body=chunked()), "7.1", OK, N200),
    Vector(
        "ok chunk extension", post(TE, body=chunked(size=b"%x;a=b" % len(BODY))), "7.1.1", OK, N200
    ),
    # --- Content-Length with Transfer-Encoding (CL.TE, TE.CL) ---
    Vector(
        "CL then TE",
        post(length(), TE, body=chunked()),
        "6.3 (3): MAY reject; here always",
        REFUSED,
        N400,
    ),
    Vector("TE then CL", post(TE, length(), body=chunked()), "6.3 (3)", REFUSED, N400),
    # --- duplicate or conflicting Content-Length ---
    Vector(
        "CL twice, equal",
        post(length(), length()),
        "6.3 (5): MAY accept equal; here never",
        REFUSED,
        N400,
    ),
    Vector(
        "CL twice, different",
        post(length(), b"Content-Length: 3"),
        "6.3 (5): MUST 400",
        REFUSED,
        N400,
    ),
    Vector(
        "CL as a list",
        post(b"Content-Length: %d, %d" % (len(BODY), len(BODY))),
        "6.3 (5)",
        REFUSED,
        N400,
    ),
    Vector(
        "CL with a sign",
        post(b"Content-Length: +%d" % len(BODY)),
        "8.6 (RFC 9110): 1*DIGIT",
        REFUSED,
        N400,
    ),
    Vector("CL in hex", post(b"Content-Length: 0x%x" % len(BODY)), "8.6 (RFC 9110)", REFUSED, N400),
    Vector(
        "CL overflow", post(b"Content-Length: 99999999999999999999999"), "6.3 (5)", REFUSED, N400
    ),
    Vector(
        "CL, space before colon",
        post(b"Content-Length : %d" % len(BODY)),
        "5.1: MUST 400",
        REFUSED,
        N400,
    ),
    # --- Transfer-Encoding other than chunked (TE.TE obfuscations) ---
    Vector(
        "TE gzip",
        post(b"Transfer-Encoding: gzip", body=chunked()),
        "6.1: 501 or 400",
        REFUSED,
        N501,
    ),
    Vector(
        "TE chunked, gzip",
        post(b"Transfer-Encoding: chunked, gzip", body=chunked()),
        "6.3 (4): chunked not last, MUST 400",
        REFUSED,
        N501,
    ),
    Vector(
        "TE gzip, chunked",
        post(b"Transfer-Encoding: gzip, chunked", body=chunked()),
        "6.1: a coding not understood",
        REFUSED,
        N501,
    ),
    Vector(
        "TE identity", post(b"Transfer-Encoding: identity"), "6.1 (identity is gone)", REFUSED, N501
    ),
    Vector(
        "TE chunked, chunked",
        post(b"Transfer-Encoding: chunked, chunked", body=chunked()),
        "7: MUST NOT apply chunked twice",
        REFUSED,
        N501,
    ),
    Vector("TE twice", post(TE, TE, body=chunked()), "7", REFUSED, N400),
    Vector(
        "TE xchunked", post(b"Transfer-Encoding: xchunked", body=chunked()), "6.1", REFUSED, N501
    ),
    Vector(
        "TE behind a vertical tab",
        post(b"Transfer-Encoding: \x0bchunked", body=chunked()),
        "5.5 (RFC 9110): field-value",
        REFUSED,
        N501,
    ),
    Vector(
        "TE, space before colon",
        post(b"Transfer-Encoding : chunked", body=chunked()),
        "5.1: MUST 400",
        REFUSED,
        N400,
    ),
    Vector(
        "TE in HTTP/1.0",
        post(TE, body=chunked(), version=b"1.0"),
        "6.1: framing faulty, MUST close",
        REFUSED,
        N400,
    ),
    # --- obsolete line folding and lines that start with whitespace ---
    Vector("obs-fold", post(length(), b"X-Pad: a\r\n b"), "5.2: 400 or replace", REFUSED, N400),
    Vector(
        "obs-fold into TE",
        post(b"Transfer-Encoding:\r\n chunked", body=chunked()),
        "5.2",
        REFUSED,
        N400,
    ),
    Vector(
        "whitespace before the first field",
        b"POST " + PATH + b" HTTP/1.1\r\n Host: g\r\n" + length() + b"\r\n\r\n" + BODY,
        "2.2: MUST reject or ignore",
        REFUSED,
        N400,
    ),
    # --- bad chunk sizes ---
    Vector(
        "chunk size 5x",
        post(TE, body=chunked(size=b"%xx" % len(BODY))),
        "7.1: 1*HEXDIG",
        REFUSED,
        N400,
    ),
    Vector(
        "chunk size negative", post(TE, body=chunked(size=b"-%x" % len(BODY))), "7.1", REFUSED, N400
    ),
    Vector("chunk size 0x", post(TE, body=chunked(size=b"0x%x" % len(BODY))), "7.1", REFUSED, N400),
    Vector(
        "chunk size, space before",
        post(TE, body=chunked(size=b" %x" % len(BODY))),
        "7.1",
        REFUSED,
        N400,
    ),
    Vector(
        "chunk size, space after",
        post(TE, body=chunked(size=b"%x " % len(BODY))),
        "7.1.1: BWS only before ';'",
        REFUSED,
        N200,
    ),
    Vector(
        "chunk size overflow",
        post(TE, body=chunked(size=b"1" + b"0" * 16)),
        "7.1: MUST anticipate overflow",
        REFUSED,
        N400,
    ),
    Vector(
        "chunk longer than its size",
        post(TE, body=chunked(size=b"%x" % (len(BODY) - 3))),
        "7.1",
        REFUSED,
        N400,
    ),
    Vector("chunk without its CRLF", post(TE, body=chunked(tail=b"")), "7.1", REFUSED, N400),
    # --- bad chunk extensions ---
    Vector(
        "chunk extension without a name",
        post(TE, body=chunked(size=b"%x;" % len(BODY))),
        "7.1.1: token",
        REFUSED,
        N200,
    ),
    Vector(
        "chunk extension with NUL",
        post(TE, body=chunked(size=b"%x;a=b\x00" % len(BODY))),
        "7.1.1",
        REFUSED,
        N200,
    ),
    Vector(
        "chunk extension, bare LF",
        post(TE, body=b"%x;a\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
        "2.2",
        REFUSED,
        N200,
    ),
    Vector(
        "chunk extension, open quote",
        post(TE, body=chunked(size=b'%x;a="b' % len(BODY))),
        "7.1.1: quoted-string",
        REFUSED,
        N200,
    ),
    Vector(
        "chunk extension, bare CR",
        post(TE, body=chunked(size=b"%x;a\rb" % len(BODY))),
        "2.2: bare CR invalid",
        REFUSED,
        N400,
    ),
    Vector(
        "chunk extension of 100 kB",
        post(TE, body=chunked(size=b"%x;a=" % len(BODY) + b"b" * 100_000)),
        "7.1.1: ignored, in the body timeouts",
        OK,
        N200,
    ),
    # --- bare LF and bare CR as line ends ---
    Vector(
        "bare LF after the request line",
        b"POST " + PATH + b" HTTP/1.1\nHost: g\r\n" + length() + b"\r\n\r\n" + BODY,
        "2.2: MAY accept; here never",
        REFUSED,
        N200,
    ),
    Vector("bare LF after a field", post(b"X-Pad: a\n" + length()), "2.2", REFUSED, N200),
    Vector(
        "bare LF ends the head",
        post(length()).replace(b"\r\n\r\n", b"\r\n\n"),
        "2.2",
        REFUSED,
        N200,
    ),
    Vector(
        "bare LF after a chunk size",
        post(TE, body=b"%x\n" % len(BODY) + BODY + b"\r\n0\r\n\r\n"),
        "2.2",
        REFUSED,
        N200,
    ),
    Vector("bare LF after chunk data", post(TE, body=chunked(tail=b"\n")), "2.2", REFUSED, N200),
    Vector(
        "bare CR in a value",
        post(length(), b"X-Pad: a\rb"),
        "2.2: MUST reject or replace",
        REFUSED,
        N400,
    ),
    # --- NUL and control bytes in names and values ---
    Vector("NUL in a name", post(length(), b"X-\x00Pad: a"), "5.1: token", REFUSED, N400),
    Vector(
        "NUL in a value",
        post(length(), b"X-Pad: a\x00b"),
        "5.5 (RFC 9110): MUST reject or replace",
        REFUSED,
        N400,
    ),
    Vector("SOH in a value", post(length(), b"X-Pad: a\x01b"), "5.5 (RFC 9110)", REFUSED, N200),
    Vector("DEL in a value", post(length(), b"X-Pad: a\x7fb"), "5.5 (RFC 9110)", REFUSED, N200),
    Vector("space in a name", post(length(), b"X Pad: a"), "5.1: token", REFUSED, N400),
    Vector("empty name", post(length(), b": a"), "5.1: token", REFUSED, N400),
    Vector(
        "control byte in the target",
        b"POST /v1/chat\x01completions HTTP/1.1\r\nHost: g\r\n" + length() + b"\r\n\r\n" + BODY,
        "3.2",
        REFUSED,
        N400,
    ),
    # --- Host ---
    Vector("HTTP/1.1 without Host", post(length(), host=False), "3.2: MUST 400", REFUSED, N400),
    Vector("two Hosts", post(length(), b"Host: other"), "3.2: MUST 400", REFUSED, N400),
    # --- pipelined requests after a bad one ---
    Vector(
        "smuggled behind CL+TE",
        post(length(), TE, body=b"0\r\n\r\n" + post(length(SMUGGLED), body=SMUGGLED)),
        "6.3: nothing after a refusal is read",
        REFUSED,
        N400,
    ),
    Vector(
        "smuggled in a chunk",
        post(TE, body=chunked(size=b"%xx" % len(BODY)) + post(length(SMUGGLED), body=SMUGGLED)),
        "7.1",
        REFUSED,
        N400,
    ),
    Vector(
        "good, then bad",
        post(length()) + post(length(), length()),
        "6.3: answered, then 400",
        Answer((200, 400), closed=True),
        Answer((200, 400), closed=True),
    ),
    # --- oversized heads ---
    Vector(
        "a 70 kB field",
        post(length(), b"X-Pad: " + b"a" * 70_000),
        "RFC 6585 431; nginx: 400 past 8 kB",
        Answer((431,), closed=True),
        N400,
    ),
    Vector(
        "a 70 kB target",
        b"POST /" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: g\r\n" + length() + b"\r\n\r\n" + BODY,
        "3: 414 or 431",
        Answer((431,), closed=True),
        Answer((414,), closed=True),
    ),
    Vector(
        "1,000 fields",
        post(length(), *[b"X-%d: %s" % (i, b"a" * 64) for i in range(1000)]),
        "431 past 64 kB in all",
        Answer((431,), closed=True),
        N400,
    ),
]


def table() -> str:
    """The vectors as the Markdown table of `test_smuggling.py`'s docstring."""
    rows = [
        "| vector | RFC 9112 | strict answer (the gateway) | nginx 1.22.1 |",
        "|---|---|---|---|",
    ]
    for vector in VECTORS:
        differs = "" if vector.nginx == vector.strict else " (differs)"
        rows.append(
            f"| {vector.name} | {vector.rule} | {vector.strict} | {vector.nginx}{differs} |"
        )
    return "\n".join(rows)
