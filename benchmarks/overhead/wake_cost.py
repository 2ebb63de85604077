"""What a `send` costs the sender when it wakes a reader asleep on the other core.

Usage: ``python benchmarks/overhead/wake_cost.py [--rounds N]``

Two processes ping-pong over loopback TCP, the sender on core 1, the echo on core 0: 400 bytes
out, 300 back, as the gateway's upstream call does. The sender times its own `send` call. Three
ways for the echo to wait:

- ``awake``: it polls a non-blocking socket, so no wake-up is needed (the floor);
- ``asleep, core busy``: it blocks in `recv` while a spinning process keeps core 0 running;
- ``asleep, core idle``: it blocks in `recv` on an otherwise idle core 0.

On this VM the two asleep cases cost the sender several times the awake one: that is why the
gateway gathers its writes per turn of the loop (backends/transport/write_batch.py).
"""

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

MESSAGE = b"x" * 400
ANSWER = b"y" * 300


def echo(listener: socket.socket, poll: bool) -> None:
    os.sched_setaffinity(0, {0})
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.setblocking(not poll)
    while True:
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            continue
        if not data:
            return
        conn.sendall(ANSWER)


def measure(poll: bool, rounds: int) -> tuple[float, float]:
    """Median `send` time and round trip, in µs."""
    listener = socket.create_server(("127.0.0.1", 0))
    pid = os.fork()
    if pid == 0:  # the echo
        try:
            echo(listener, poll)
        finally:
            os._exit(0)
    os.sched_setaffinity(0, {1})
    sender = socket.create_connection(listener.getsockname())
    sender.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sends, trips = [], []
    for _ in range(rounds):
        started = time.perf_counter()
        sender.send(MESSAGE)
        sent = time.perf_counter()
        received = 0
        while received < len(ANSWER):
            received += len(sender.recv(4096))
        sends.append(sent - started)
        trips.append(time.perf_counter() - started)
    sender.close()
    listener.close()
    os.waitpid(pid, 0)
    return statistics.median(sends) * 1e6, statistics.median(trips) * 1e6


@contextmanager
def spinning_core_0() -> Iterator[None]:
    spinner = subprocess.Popen(["taskset", "-c", "0", sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20_000)
    args = parser.parse_args()
    rows = [("awake (polling)", *measure(True, args.rounds))]
    with spinning_core_0():
        rows.append(("asleep, core busy", *measure(False, args.rounds)))
    rows.append(("asleep, core idle", *measure(False, args.rounds)))
    print("| echo on core 0 | sender's send p50 | round trip p50 |\n|---|---|---|")
    for name, send, trip in rows:
        print(f"| {name} | {send:.1f} µs | {trip:.1f} µs |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
