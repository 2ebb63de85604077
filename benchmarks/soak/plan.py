"""What a soak run sends: its length and rate, the gateway's timeouts, and the mix of faults.

A request's fault is chosen by the client and named in its last message, the cue that
``tests/support/fake_upstream.py`` acts on; so every answer can be checked against the answer
that fault should get. The process-level faults run beside the load: the upstream's outage
(``upstream.py``), Redis restarting under the shared rate limits (``redis.py``), a reload of
the configuration every ``reload_every`` seconds (``chores.py``), and slow clients that hold
``slow_clients`` connections trickling a byte a second (``slow.py``).
"""

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Fault:
    """One kind of request: the upstream's cue, streamed or not, and the answer it should get."""

    name: str
    cue: str
    stream: bool
    expected: str  # an outcome of load.py: 2xx, 5xx, stream_error
    weight: float  # share of requests, in percent


# About 11 % of requests meet an upstream fault; "slow" is a fault the gateway must wait out.
FAULTS = (
    Fault("none", "hello", False, "2xx", 55.0),
    Fault("none-stream", "long:10", True, "2xx", 30.0),  # ten chunks 10 ms apart, then [DONE]
    Fault("slow", "slow:0.3", False, "2xx", 4.0),  # under the read timeout: a late 200
    Fault("503", "status:503", False, "5xx", 2.0),  # retried by the gateway, then 503
    Fault("500", "status:500", False, "5xx", 1.0),  # 502
    Fault("garbage", "garbage", False, "5xx", 1.0),  # a 200 that is not JSON: 502
    Fault("hang", "hang", False, "5xx", 1.5),  # past the read timeout: 504
    Fault("stall-after-headers", "stall-after-headers", True, "stream_error", 1.5),
    Fault("malformed-sse", "malformed-sse", True, "stream_error", 2.0),
    Fault("reset-mid-stream", "reset-mid-stream", True, "stream_error", 2.0),
)

NO_FAULT = ("none", "none-stream")  # their clean answers are the latency columns


@dataclass(frozen=True)
class Plan:
    """Length, rate and timing of one run; every time is in seconds."""

    duration: float
    rate: float  # requests started per second, whatever the answers do (open loop)
    window: float  # one row of the report per window
    read_timeout: float  # the gateway's per-read upstream timeout (a stall outlives it)
    total_timeout: float  # the gateway's whole-request upstream timeout
    outage_at: float  # share of the run after which the upstream is killed
    outage: float  # how long it stays down before it is started again
    drain: float  # longest wait for in-flight to return to 0 once the load stopped
    slow_clients: int  # connections always open, sending a head or a body a byte a second
    head_timeout: float  # the gateway's client timeouts: short, so the slow clients cycle
    body_read_timeout: float
    body_timeout: float
    reload_every: float  # seconds between reloads of the configuration (POST /admin/reload)
    redis_outage_at: float  # share of the run after which Redis (the rate limits) is stopped
    redis_outage: float  # how long it stays down before it is started again
    seed: int = 7

    @property
    def requests(self) -> int:
        return round(self.duration * self.rate)

    @property
    def deadline(self) -> float:
        """A client's patience: an answer later than this is a stuck request."""
        return self.total_timeout + 5.0


FULL = Plan(180.0, 200.0, 10.0, 2.0, 10.0, 0.45, 10.0, 10.0, 200, 5.0, 2.5, 8.0, 30.0, 0.7, 10.0)
QUICK = Plan(8.0, 100.0, 1.0, 1.0, 4.0, 0.45, 1.5, 5.0, 40, 2.0, 2.5, 3.0, 2.0, 0.7, 1.5)


def schedule(plan: Plan) -> list[Fault]:
    """The fault of every request, in sending order; seeded, so runs send the same mix."""
    chooser = random.Random(plan.seed)
    weights = [fault.weight for fault in FAULTS]
    return chooser.choices(FAULTS, weights=weights, k=plan.requests)
