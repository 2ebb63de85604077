"""One gateway streaming point, for comparing commits: TTFT and inter-event gaps.

Usage: ``python benchmarks/overhead/stream_point.py STREAMS [quick]`` (1: the TTFT point,
1000: the gaps point, both as the overhead run measures them; ``quick``: its ``--quick`` loads)

Starts the paced SSE upstream (core 0) and ``python -m gateway serve`` (core 1) from whatever
``gateway`` package Python imports, so ``PYTHONPATH=<a worktree of another commit>`` measures that
commit with this harness, as ``gateway_point.py`` does for non-streaming requests.
"""

import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for benchmarks.upstream_client

from loads import StreamLoad, StreamResult, stream_point
from procs import (
    GATEWAY_CORE,
    LOAD_CORE,
    gateway_settings,
    keep_to_the_load_core,
    start_gateway,
    start_sse_upstream,
)
from run import FULL, QUICK


def main() -> int:
    keep_to_the_load_core()
    streams = int(sys.argv[1])
    plan = QUICK if sys.argv[2:] == ["quick"] else FULL
    load: StreamLoad = plan.one if streams == 1 else plan.many
    with tempfile.TemporaryDirectory(prefix="stream-point-") as name, ExitStack() as stack:
        tmp = Path(name)
        sse = start_sse_upstream(stack, tmp, LOAD_CORE, FULL.itl_ms)
        settings = gateway_settings(sse.url, tmp)
        gateway = start_gateway(stack, tmp, str(GATEWAY_CORE), settings, "gateway")
        point = stream_point("gateway", gateway.url, load, gateway.pid)
    got = point.result
    assert isinstance(got, StreamResult)
    print(f"streams={load.streams} ttft_p50={got.ttft_p50_ms} ms gap_p50={got.gap_p50_ms} ms "
          f"gap_p99={got.gap_p99_ms} ms errors={got.errors} rss={point.rss_mb} MiB")  # fmt: skip
    return 1 if got.errors else 0


if __name__ == "__main__":
    sys.exit(main())
