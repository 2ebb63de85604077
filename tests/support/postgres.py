"""A throwaway PostgreSQL server for tests that stop and start it (the shared cluster ./dev
test runs serves other tests): Debian's server binaries, `initdb` into a temporary folder,
`pg_ctl` on a free port. As root, both run as the `postgres` user, as initdb requires."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.engines.vllm_engine import free_port


def server_binaries() -> Path:
    """The newest installed /usr/lib/postgresql/<version>/bin."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if not found:
        raise AssertionError("PostgreSQL's server is missing: ./dev test installs it")
    return found[-1].parent


class ThrowawayPostgres:
    """One PostgreSQL cluster of its own; `url` stays the same across `stop` and `start`."""

    def __init__(self) -> None:
        self.bin = server_binaries()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="pika-pg-"))
        self.data = self.folder / "data"
        self.url = f"postgresql://gateway@127.0.0.1:{self.port}/postgres"
        self._as: list[str] = []
        if os.geteuid() == 0:  # initdb refuses root: the folder goes to postgres
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def create(self) -> ThrowawayPostgres:
        self._run("initdb", "-D", str(self.data), "-U", "gateway", "-A", "trust", "--no-sync")
        return self.start()

    def start(self) -> ThrowawayPostgres:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.folder} -c fsync=off"
        log = str(self.folder / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, tool: str, *args: str) -> None:
        command = [*self._as, str(self.bin / tool), *args]
        subprocess.run(command, check=True, capture_output=True, cwd=self.folder)
