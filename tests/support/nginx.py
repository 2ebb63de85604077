"""Debian's nginx as a reference HTTP/1.1 server for tests: one process in a temporary prefix,
its own front (`proxy_pass`, so it reads whole request bodies as a proxy does) in front of its
own `return 200`, on free ports."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.engines.vllm_engine import free_port

CONFIG = """daemon off;
master_process off;
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{ listen 127.0.0.1:{back}; location / {{ return 200 "back\\n"; }} }}
    server {{ listen 127.0.0.1:{front}; location / {{ proxy_pass http://127.0.0.1:{back}; }} }}
}}
"""


def nginx_binary() -> str:
    """nginx on PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
    if found is None:
        raise AssertionError("nginx is missing: ./dev test installs Debian's nginx package")
    return found


def nginx_version() -> str:
    done = subprocess.run([nginx_binary(), "-v"], capture_output=True, text=True, check=True)
    return done.stderr.strip().removeprefix("nginx version: ")


@contextlib.contextmanager
def nginx(prefix: Path) -> Iterator[tuple[str, int]]:
    """nginx serving on 127.0.0.1; yields the front's address."""
    front, back = free_port(), free_port()
    config = prefix / "nginx.conf"
    config.write_text(CONFIG.format(prefix=prefix, front=front, back=back))
    command = [nginx_binary(), "-p", str(prefix), "-c", str(config), "-e", "stderr"]
    with (prefix / "nginx.log").open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", front)):
                break
            assert process.poll() is None, (prefix / "nginx.log").read_text()
            assert time.monotonic() < deadline, "nginx did not start"
            time.sleep(0.02)
        yield "127.0.0.1", front
    finally:
        process.terminate()
        process.wait(timeout=10)
