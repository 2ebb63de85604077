"""The `gateway` command: `serve`, `eval`, `report`, `purge`, and the local demo stack."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from gateway.eval import command as evaluation
from gateway.logs import configure_logging
from gateway.report import command as report_command
from gateway.settings import Settings, describe_errors
from gateway.tasks.config import TaskConfigError

DEMO_MODULE = "tests.engines.demo"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gateway", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="run the gateway (uvicorn, uvloop, its own HTTP/1.1 protocol)"
    )
    serve.add_argument("--host", help="address to bind (GATEWAY_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (GATEWAY_PORT)")
    serve.add_argument("--workers", type=int, help="worker processes (GATEWAY_WORKERS)")

    check = commands.add_parser("check-config", help="validate the configuration and print it")
    check.set_defaults(command="check-config")

    demo = commands.add_parser(
        "demo", help="the local stack: a tiny tagger model, its shadow report PASS then FAIL"
    )
    demo.add_argument(
        "--port", type=int, default=8080, help="the gateway's port (0: a free one as it starts)"
    )
    demo.add_argument("--keep-running", action="store_true", help="serve until Ctrl-C")

    evaluate = commands.add_parser(
        "eval", help="score a labelled dataset on one or more targets (gateway or engine)"
    )
    evaluation.add_arguments(evaluate)

    purge = commands.add_parser("purge", help="delete stored shadow pairs older than the retention")
    purge.add_argument(
        "--days", type=int, help="keep this many days (GATEWAY_RECORDS_RETENTION_DAYS)"
    )

    report = commands.add_parser(
        "report", help="the shadow report and cutover verdict (exit 0 PASS, 1 FAIL, 2 error)"
    )
    report_command.add_arguments(report)

    args = parser.parse_args(argv)
    if args.command == "eval":
        return evaluation.run(args)
    if args.command == "demo":
        return run_demo(port=args.port, keep_running=args.keep_running)

    settings = load_settings()
    if settings is None:
        return 2
    if args.command == "check-config":
        shown = settings.model_dump(mode="json")
        shown["records_url"] = without_password(settings.records_url)
        if settings.rate_limit_url is not None:
            shown["rate_limit_url"] = without_password(settings.rate_limit_url)
        print(json.dumps(shown, indent=2))
        return 0
    if args.command == "purge":
        return purge_records(settings, args.days)
    if args.command == "report":
        rules, shadowing = settings.route_rules(), settings.shadowing_routes()
        return report_command.run(
            args, settings.gate_rule(), settings.records_url, rules, shadowing
        )
    overrides = {
        key: value
        for key, value in (("host", args.host), ("port", args.port), ("workers", args.workers))
        if value is not None
    }
    return serve_forever(settings.model_copy(update=overrides))


def run_demo(port: int, keep_running: bool) -> int:
    """The local stack on the repository's test engines, which the production wheel leaves out:
    imported by name from the checkout, so nothing of the gateway depends on them."""
    try:
        found = importlib.util.find_spec(DEMO_MODULE) is not None
    except ModuleNotFoundError:
        found = False
    if not found:
        print(
            "gateway: the demo runs the repository's test engines (tests/engines/), which a "
            "production install leaves out; run it from a checkout with ./dev demo",
            file=sys.stderr,
        )
        return 2
    demo: Callable[..., int] = importlib.import_module(DEMO_MODULE).run_demo
    return demo(port=port, keep_running=keep_running)


def load_settings() -> Settings | None:
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"gateway: invalid configuration\n{describe_errors(exc)}", file=sys.stderr)
        return None
    missing = settings.missing_extras()
    for problem in missing:  # one line each, never a traceback
        print(f"gateway: {problem}", file=sys.stderr)
    if missing:
        return None
    try:
        from gateway.app import enabled_tasks

        enabled_tasks(settings)  # a bad task file is a configuration error too
    except TaskConfigError as exc:
        print(f"gateway: invalid task\n{exc}", file=sys.stderr)
        return None
    return settings


def purge_records(settings: Settings, days: int | None) -> int:
    from gateway.records.base import StoreError
    from gateway.records.store import open_store, purge

    days = settings.records_retention_days if days is None else days
    if days < 1:
        print("gateway: --days must be at least 1", file=sys.stderr)
        return 2

    async def run() -> int:
        store = open_store(settings.records_url)
        try:
            return await purge(store, days)
        finally:
            await store.close()

    try:
        count = asyncio.run(run())
    except StoreError as exc:
        print(f"gateway: purge failed: {exc}", file=sys.stderr)
        return 1
    print(f"gateway: purged {count} pairs older than {days} days")
    return 0


# uvicorn runs the server (sockets, workers, signals, lifespan); the gateway's own protocol
# handles each connection, for less CPU per request (gateway/http/server.py).
HTTP_PROTOCOL = "gateway.http.server:HTTPProtocol"
OTHER_FILES = 256  # descriptors besides connections: the listener, the records store, logs


def serve_forever(settings: Settings) -> int:
    import uvicorn

    configure_logging(settings.log_level)
    open_files_for(settings.max_connections)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again with the handler
    # that was there before it started; a no-op one lets `gateway serve` exit 0 once drained.
    # Requests still running `shutdown_timeout` seconds after SIGTERM are cut (every worker).
    signal.signal(signal.SIGTERM, lambda *_: None)
    if settings.workers > 1:
        # Each worker process builds its own app (and pools) from the same environment, and
        # listens on its own socket (gateway/http/workers.py). `--workers` goes into it too: a
        # worker's app reads how many they are (busy polling's `auto`).
        os.environ["GATEWAY_WORKERS"] = str(settings.workers)
        with metrics_folder(settings.metrics_dir) as folder:
            # The workers' metrics, which a scrape of any worker adds up (gateway/numbers.py).
            os.environ["GATEWAY_METRICS_DIR"] = str(folder)
            return serve_workers(settings)
    from gateway.app import create_app

    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http=HTTP_PROTOCOL,
        access_log=False,
        proxy_headers=False,  # X-Forwarded-* would only rewrite a client address nobody reads
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    return 0


def serve_workers(settings: Settings) -> int:
    import uvicorn

    from gateway.http import workers

    config = uvicorn.Config(
        "gateway.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        http=HTTP_PROTOCOL,
        access_log=False,
        proxy_headers=False,
        log_level=settings.log_level,
        timeout_graceful_shutdown=settings.shutdown_timeout,
    )
    workers.run(config)
    return 0


@contextlib.contextmanager
def metrics_folder(configured: Path | None) -> Iterator[Path]:
    """The workers' metrics folder, emptied: the configured one, or a temporary one removed
    when the group stops."""
    from gateway.numbers import empty_folder

    if configured is not None:
        empty_folder(configured)
        yield configured
        return
    with tempfile.TemporaryDirectory(prefix="gateway-metrics-") as made:
        yield Path(made)


def open_files_for(connections: int) -> None:
    """Each client connection is a descriptor, and may hold one to an engine: the soft limit
    of open files (often 1,024) is raised towards what `connections` need, for the workers
    too, which inherit it; a hard limit too low for them is said at start."""
    from gateway.http.limits import raise_open_files

    needed = 2 * connections + OTHER_FILES
    soft, _ = raise_open_files(needed)
    if soft < needed:
        logging.getLogger("gateway").warning(
            "open files are limited to %d per process, fewer than the %d that "
            "GATEWAY_MAX_CONNECTIONS=%d may need: raise the hard limit (ulimit -Hn, "
            "LimitNOFILE, the container's nofile) or lower GATEWAY_MAX_CONNECTIONS",
            soft, needed, connections,
        )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())


def without_password(url: str) -> str:
    """A URL safe to print: its password replaced by `***`."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
