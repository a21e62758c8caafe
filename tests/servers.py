"""Real Redis and PostgreSQL servers for the distributed configuration: Debian's binaries (``scripts/test``
installs them), started on loopback, on free ports, in temporary folders, for one test session.

PostgreSQL's ``initdb`` and ``pg_ctl`` refuse to run as root; as root they run as the ``postgres`` user
(``runuser``) in a folder that user owns.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from itertools import count
from pathlib import Path

from service_helpers import free_port, wait_for

REDIS_PASSWORD = "test-redis-password"
REDIS_DATABASES = 16


def _sort_key(path: str) -> tuple[int, ...]:
    return tuple(int(part) for part in Path(path).parts[-3].split(".") if part.isdigit())


def postgres_bin() -> Path | None:
    """``/usr/lib/postgresql/<newest>/bin`` when Debian's server package is installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_sort_key)
    return Path(found[-1]).parent if found else None


class RedisServer:
    """``redis-server`` on 127.0.0.1 with a password, append-only as in docker-compose.yml; each
    :meth:`new_url` is a fresh logical database, so two services never share a queue."""

    def __init__(self, binary: str) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="anode-redis-"))
        self.port = free_port()
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--requirepass", REDIS_PASSWORD,
             "--dir", str(self.folder), "--appendonly", "yes", "--save", "", "--databases", str(REDIS_DATABASES)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._databases = count()
        wait_for(self._ready, 30, "redis-server to answer")

    def _ready(self) -> bool:
        import redis

        assert self.process.poll() is None, "redis-server exited"
        try:
            return bool(redis.Redis(port=self.port, password=REDIS_PASSWORD).ping())
        except redis.exceptions.ConnectionError:
            return False

    def new_url(self) -> str:
        number = next(self._databases)
        assert number < REDIS_DATABASES, "out of Redis databases: raise REDIS_DATABASES"
        return f"redis://:{REDIS_PASSWORD}@127.0.0.1:{self.port}/{number}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


class PostgresServer:
    """A throw-away cluster (``initdb`` with trust auth on loopback) served by ``pg_ctl``; each
    :meth:`new_url` creates an empty database."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.folder = Path(tempfile.mkdtemp(prefix="anode-pg-"))
        self.port = free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self.data = self.folder / "data"
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
        options = (f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c max_connections=300 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w",
                  "start")
        self._databases = count()

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self._as, str(self.bindir / program), *args], capture_output=True, text=True,
                              timeout=120, cwd=self.folder, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed ({done.returncode}): {done.stdout}\n{done.stderr}")

    def new_url(self) -> str:
        import psycopg

        name = f"anode_{next(self._databases)}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

