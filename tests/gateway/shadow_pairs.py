"""A hand-built set of pair records whose report numbers are worked out by hand in the tests.

Shadow pairs, vllm (primary) against trt (candidate), every request streamed with a schema:

    A  10 agreeing pairs, 22:00-22:09 UTC: primary e2e 100..190 ms (step 10), candidate +10 ms;
       TTFT primary 10..19 ms, candidate +2 ms
    B  4 disagreeing pairs, 23:00-23:03: three happy -> sad, one equal but for whitespace
    C  2 parity-flagged pairs: the candidate drops the schema; the candidate cut at 20 tokens
       where the primary wrote 30
    D  3 one-sided errors (candidate 503 twice, primary 500 once) and 1 where both failed
    every B, C, D leg that answered: primary 100 ms (TTFT 10), candidate 120 ms (TTFT 15)

plus one older pair with another candidate ("old": left out) and 5 noise pairs, 4 agreeing.
"""

from __future__ import annotations

from gateway.shadow.legs import parse_json
from gateway.shadow.pairs import Leg, PairRecord, Params

T0 = 1_699_999_200.0  # 2023-11-14T22:00:00Z, on the hour
SCHEMA = {
    "type": "object",
    "properties": {"mood": {"enum": ["happy", "sad", "calm"]}},
    "required": ["mood"],
}
PARAMS = Params(stream=True, max_tokens=50, schema=SCHEMA, response_format="json_schema")
HAPPY, SAD = '{"mood": "happy"}', '{"mood": "sad"}'


def primary(text: str | None = HAPPY, e2e: float = 100.0, ttft: float = 10.0, **kw: object) -> Leg:
    return _leg("vllm", text, e2e, ttft, **kw)


def candidate(
    text: str | None = HAPPY, e2e: float = 120.0, ttft: float = 15.0, **kw: object
) -> Leg:
    return _leg("trt", text, e2e, ttft, **kw)


def _leg(backend: str, text: str | None, e2e: float, ttft: float, **kw: object) -> Leg:
    fields: dict[str, object] = {"finish_reason": "stop", "prompt_tokens": 40}
    fields |= {"completion_tokens": 6, "ttft_ms": ttft, "e2e_ms": e2e}
    fields |= {"parsed": parse_json(text) if text is not None else None, **kw}
    return Leg(backend, 200, text, **fields)  # type: ignore[arg-type]


def failed(backend: str, status: int) -> Leg:
    return Leg(backend, status, None, e2e_ms=5.0, error=f"upstream {status}")


def pair(
    pair_id: str, at: float, first: Leg, second: Leg, kind: str = "shadow", params: Params = PARAMS
) -> PairRecord:
    request = f'{{"messages": [{{"role": "user", "content": "story {pair_id}"}}]}}'
    return PairRecord(
        pair_id=pair_id,
        created_at=at,
        kind=kind,  # type: ignore[arg-type]
        public_model="tagger",
        path="/v1/chat/completions",
        request_hash=f"hash-{pair_id}",
        request=request,
        params=params,
        primary=first,
        candidate=second,
    )


def records() -> list[PairRecord]:
    pairs = [pair("old", T0 - 600, primary(), Leg("old", 200, SAD, e2e_ms=1.0))]
    for i in range(10):
        legs = primary(e2e=100 + 10 * i, ttft=10 + i), candidate(e2e=110 + 10 * i, ttft=12 + i)
        pairs.append(pair(f"a{i}", T0 + 60 * i, *legs))
    b = T0 + 3600
    pairs += [pair(f"b{j}", b + 60 * j, primary(HAPPY), candidate(SAD)) for j in range(3)]
    pairs.append(pair("b3", b + 180, primary(SAD), candidate('{"mood":  "sad"}\n')))
    pairs += [
        pair("c0", T0 + 1800, primary(), candidate("mood: happy")),
        pair(
            "c1",
            T0 + 1860,
            primary(completion_tokens=30),
            candidate(finish_reason="length", completion_tokens=20),
        ),
        pair("d0", T0 + 1900, primary(), failed("trt", 503)),
        pair("d1", T0 + 1910, primary(), failed("trt", 503)),
        pair("d2", T0 + 1920, failed("vllm", 500), candidate()),
        pair("d3", T0 + 1930, failed("vllm", 502), failed("trt", 504)),
    ]
    noise = [primary(), primary(), primary(), primary(), primary(SAD)]
    pairs += [pair(f"n{k}", T0 + 30 * k, primary(), leg, "noise") for k, leg in enumerate(noise)]
    return pairs
