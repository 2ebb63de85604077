"""A simulated pool of LLM engine replicas, routed by the gateway's own balancer.

Simulated, not real: a discrete-event model of continuous batching, so many replicas and tens
of thousands of requests run in seconds on one core, the same for every policy. What each
replica does per step (one token for every running sequence):

    step time = STEP_BASE + STEP_PER_SEQUENCE x running sequences
                + PREFILL_PER_TOKEN x prompt tokens read in that step

so a replica slows down as its batch grows and as prompts arrive. A sequence holds KV cache
for its prompt's own part and its whole answer (`KV_TOKENS` per replica, reserved when it is
admitted, as a scheduler that must not preempt would): long answers hold it for many steps,
and a queue forms once it is full. Each step reads at most `PREFILL_BUDGET` prompt tokens
(chunked prefill's batch budget). A request's time to first token is its wait in the queue
plus the step that reads its prompt. Each replica keeps the prefixes of its last
`CACHE_PREFIXES` prompt groups (LRU), as vLLM's prefix cache keeps blocks: a prompt whose group
is cached reads only its own suffix.

The routing is `backends.pool.balance.Balancer`, the gateway's code, fed each replica's
requests in flight as `Endpoint.active`, exactly what the gateway counts.
"""

from __future__ import annotations

import heapq
import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, cast

from backends.pool.affinity import digest
from backends.pool.balance import Balancer, Endpoint, Rules
from backends.pool.stats import LocalStats

STEP_BASE = 0.008  # seconds per decode step, whatever the batch
STEP_PER_SEQUENCE = 0.00025  # and per running sequence
PREFILL_PER_TOKEN = 0.00004  # and per prompt token read in that step
PREFILL_BUDGET = 4096  # prompt tokens one step may read
KV_TOKENS = 16384  # KV cache per replica, in tokens, beside the cached prefixes
CACHE_PREFIXES = 6


@dataclass(frozen=True, slots=True)
class Request:
    arrival: float
    group: int  # the prompt's shared prefix (system prompt, few-shot examples)
    prefix_tokens: int
    suffix_tokens: int
    output_tokens: int


@dataclass
class Workload:
    groups: int = 32
    prefix_tokens: int = 1500
    suffix_tokens: int = 100
    short_answer: float = 40.0  # mean output tokens of most answers
    long_answer: float = 400.0  # and of the long ones
    long_share: float = 0.2

    def draw(self, rng: random.Random, arrival: float) -> Request:
        mean = self.long_answer if rng.random() < self.long_share else self.short_answer
        output = max(1, int(rng.expovariate(1.0 / mean)))
        group = rng.randrange(self.groups)
        return Request(arrival, group, self.prefix_tokens, self.suffix_tokens, output)


@dataclass
class Replica:
    endpoint: Endpoint
    queue: deque[tuple[Request, int]] = field(default_factory=deque)
    running: list[list[Any]] = field(default_factory=list)  # [request, left, id, new]
    held: int = 0  # KV tokens reserved by the running sequences
    cache: OrderedDict[int, None] = field(default_factory=OrderedDict)
    busy: bool = False
    hits: int = 0
    reads: int = 0

    def step(self, now: float, first_tokens: dict[int, float]) -> float:
        """Admits from the queue, runs one step; returns its length."""
        prefill = 0
        while self.queue:
            request, rid = self.queue[0]
            need = request.suffix_tokens + request.output_tokens
            cached = request.group in self.cache
            read = request.suffix_tokens + (0 if cached else request.prefix_tokens)
            fits = self.held + need <= KV_TOKENS or not self.running
            if not fits or (prefill and prefill + read > PREFILL_BUDGET):
                break
            self.queue.popleft()
            self.held += need
            self.hits += cached
            self.reads += 1
            self.cache[request.group] = None
            self.cache.move_to_end(request.group)
            while len(self.cache) > CACHE_PREFIXES:
                self.cache.popitem(last=False)
            prefill += read
            self.running.append([request, request.output_tokens, rid, True])
        length = STEP_BASE + STEP_PER_SEQUENCE * len(self.running) + PREFILL_PER_TOKEN * prefill
        for seq in self.running:
            if seq[3]:
                first_tokens[seq[2]] = now + length
                seq[3] = False
            seq[1] -= 1
        return length

    def finish_step(self) -> None:
        done = [seq for seq in self.running if seq[1] <= 0]
        self.running = [seq for seq in self.running if seq[1] > 0]
        self.endpoint.active -= len(done)
        self.held -= sum(seq[0].suffix_tokens + seq[0].output_tokens for seq in done)


def arrivals(rate: float, count: int, workload: Workload, seed: int) -> list[Request]:
    rng = random.Random(seed)
    now, out = 0.0, []
    for _ in range(count):
        now += rng.expovariate(rate)
        out.append(workload.draw(rng, now))
    return out


def simulate(
    requests: list[Request],
    replicas: int,
    balance: str,
    affinity: bool,
    seed: int = 1,
    max_load: float = 1.25,
) -> dict[str, float]:
    """Routes `requests` over `replicas` with the gateway's balancer; TTFT percentiles (s)."""
    rules = Rules(balance=cast(Any, balance), affinity_max_load=max_load)
    balancer = Balancer(rules, draw=random.Random(seed))
    stats = LocalStats()
    pool = []
    for n in range(replicas):
        name = f"10.0.0.{n}:8000"
        endpoint = Endpoint(name, cast(Any, None), stats.endpoint("sim", name))
        balancer.join(endpoint)
        pool.append(Replica(endpoint))
    events: list[tuple[float, int, int]] = []  # (time, 0 arrival / 1 step end, index)
    for i, request in enumerate(requests):
        events.append((request.arrival, 0, i))
    heapq.heapify(events)
    first: dict[int, float] = {}
    keys = [digest(f"group {g}") for g in range(64)]
    while events:
        now, kind, index = heapq.heappop(events)
        if kind == 0:
            request = requests[index]
            chosen = balancer.pick(keys[request.group] if affinity else None)
            assert chosen is not None
            replica = pool[balancer.members.index(chosen)]
            chosen.active += 1
            replica.queue.append((request, index))
        else:
            replica = pool[index]
            replica.finish_step()
            replica.busy = False
        if not replica.busy and (replica.queue or replica.running):
            replica.busy = True
            length = replica.step(now, first)
            heapq.heappush(events, (now + length, 1, pool.index(replica)))
    ttft = sorted(first[i] - requests[i].arrival for i in range(len(requests)))
    hits = sum(r.hits for r in pool) / max(1, sum(r.reads for r in pool))
    return {
        "ttft_p50": percentile(ttft, 0.50),
        "ttft_p99": percentile(ttft, 0.99),
        "cache_hit_rate": hits,
    }


def capacity(workload: Workload, seed: int = 3, count: int = 4000) -> float:
    """Requests per second one replica completes when it never runs dry and no prefix is
    ever cached (every request arrives at 0): the pool's capacity is this times its size."""
    rng = random.Random(seed)
    requests = [workload.draw(rng, 0.0) for _ in range(count)]
    requests = [Request(0.0, -1 - i, r.prefix_tokens, r.suffix_tokens, r.output_tokens)
                for i, r in enumerate(requests)]  # fmt: skip
    endpoint = Endpoint("solo", cast(Any, None), LocalStats().endpoint("sim", "solo"))
    replica = Replica(endpoint)
    for i, request in enumerate(requests):
        replica.queue.append((request, i))
        endpoint.active += 1
    now, first = 0.0, dict[int, float]()
    while replica.queue or replica.running:
        now += replica.step(now, first)
        replica.finish_step()
    return count / now


def percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]
