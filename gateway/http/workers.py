"""Worker processes under uvicorn's supervisor, each listening on a socket of its own.

uvicorn's workers share one listening socket, and the worker that wakes first accepts every
connection waiting (libuv accepts until none is left): with 64 connections opened at once, one
worker took all of them while the other idled, and two workers served fewer requests than one
(benchmarks/README.md, "Workers"). Here each worker listens on its own socket, bound to the
same address with SO_REUSEPORT, and the kernel spreads new connections over them by their
addresses. uvicorn keeps what it does well: starting, health-checking, restarting and stopping
the workers.

The supervisor binds the address first, to fail early when it is taken: once without
SO_REUSEPORT (which would let this gateway join the group of another one on the same port,
each answering half of the connections), then with it, never listening (so it receives no
connection), holding the port for its workers.
"""

from __future__ import annotations

import socket

from uvicorn.config import Config
from uvicorn.supervisors import multiprocess


class ReusePortProcess(multiprocess.Process):
    """A worker that listens on its own SO_REUSEPORT twin of each socket it is handed."""

    def target(self, sockets: list[socket.socket] | None = None) -> None:  # in the worker
        # A worker is a new interpreter (spawned): the supervisor's logging is not inherited,
        # and without this the gateway's own lines below WARNING were lost.
        from gateway.logs import configure_logging

        configure_logging(str(self.config.log_level or "info"))
        super().target([listening_twin(sock) for sock in sockets or []])


def bound_socket(
    address: tuple[str, int], family: socket.AddressFamily, reuse_port: bool = True
) -> socket.socket:
    """A TCP socket bound to `address` with SO_REUSEADDR (and SO_REUSEPORT unless told not
    to), not listening."""
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def listening_twin(shared: socket.socket) -> socket.socket:
    """This worker's own socket on `shared`'s address; the shared one is closed here."""
    twin = bound_socket(shared.getsockname()[:2], shared.family)
    shared.close()
    return twin


def run(config: Config) -> None:
    """Serves `config` with `config.workers` processes until the supervisor is told to stop."""
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    bound_socket((config.host, config.port), family, reuse_port=False).close()  # taken?
    sock = bound_socket((config.host, config.port), family)
    sock.set_inheritable(True)
    # The supervisor makes its workers through this module-level name (start, restart).
    multiprocess.Process = ReusePortProcess  # type: ignore[misc]
    multiprocess.Multiprocess(config, sockets=[sock]).run()
