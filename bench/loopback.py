"""Loopback helpers shared by the service benchmarks: a free port, waiting for a server to answer, and the
service itself (API and workers) started on loopback."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(probe: Callable[[], Any], timeout: float, what: str, interval: float = 0.02) -> Any:
    """The first truthy value of ``probe()`` (connection errors count as not yet), or exit after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except httpx.TransportError:
            value = None
        if value:
            return value
        time.sleep(interval)
    raise SystemExit(f"timed out waiting for {what}")


@contextmanager
def service(data_dir: Path, *, workers: int = 1, env: Mapping[str, str] | None = None,
            api_args: Sequence[str] = ()) -> Iterator[str]:
    """``anode-lab api`` (with ``api_args``) and ``workers`` × ``anode-lab worker --device cpu`` on a free loopback
    port, data under ``data_dir`` (one torch thread each; ``env`` adds to or overrides the environment), their
    output in ``data_dir/service.log``: yields the API's base URL (``http://127.0.0.1:PORT/api/v1``) once it
    answers, and stops every process (SIGTERM to its group) on the way out. Callers wait for the workers they
    need (``/health``'s ``workers``)."""
    port = free_port()
    full = {**os.environ, "ANODE_DATA_DIR": str(data_dir), "ANODE_PORT": str(port), "ANODE_TORCH_THREADS": "1",
            "OMP_NUM_THREADS": "1", **(env or {})}
    base = f"http://127.0.0.1:{port}/api/v1"
    procs: list[subprocess.Popen[bytes]] = []
    with open(data_dir / "service.log", "ab") as logs:
        def start(*command: str) -> None:
            procs.append(subprocess.Popen([sys.executable, "-m", "anode_lab.cli", *command], env=full, cwd=ROOT,
                                          stdout=logs, stderr=subprocess.STDOUT, start_new_session=True))

        try:
            start("api", *api_args)
            wait(lambda: httpx.get(f"{base}/health", timeout=2).status_code == 200, 120, "the API")
            for _ in range(workers):
                start("worker", "--device", "cpu")
            yield base
        finally:
            for proc in procs:
                os.killpg(proc.pid, signal.SIGTERM)
            for proc in procs:
                proc.wait(30)
