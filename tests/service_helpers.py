"""Helpers of the service tests: real API and worker processes on loopback, in a temporary data folder."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

from anode_lab.status import FINISHED

T = TypeVar("T")
API = "/api/v1"

FAST_LEASES = {
    "ANODE_HEARTBEAT_SECONDS": "0.2",
    "ANODE_HEARTBEAT_TIMEOUT_SECONDS": "2",
    "ANODE_REAPER_SECONDS": "0.3",
    "ANODE_POLL_SECONDS": "0.05",
    "ANODE_SSE_POLL_SECONDS": "0.1",
    "ANODE_TORCH_THREADS": "1",
}
"""Short leases so a killed worker's run is re-queued in about two seconds."""

EAGER = {**FAST_LEASES, "ANODE_METRICS_FLUSH_SECONDS": "0", "ANODE_CANCEL_POLL_SECONDS": "0"}
"""Short leases, and metrics and cancel flags seen at once: for tests that watch a run step by step."""

ENDED = frozenset(FINISHED)
"""The statuses a run ends in."""

TRAIN_SMALL: dict[str, Any] = {"dataset": "moons", "n_samples": 256, "batch_size": 32, "epochs": 2, "device": "cpu"}


def descendants(pid: int) -> list[int]:
    """Every process started under ``pid`` (children first), read from /proc."""
    try:
        children = [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return [*children, *(grandchild for child in children for grandchild in descendants(child))]


def kill_tree(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a process started with ``start_new_session=True``, its process group and the process group of
    everything under it (``anode-lab up`` starts each part in a group of its own), so a failing test leaves
    no API, worker or Streamlit behind. Only while ``process`` is alive and not reaped: once reaped, its id
    may belong to another process."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGSTOP)  # no new children while they are listed
    for pid in [*descendants(process.pid), process.pid]:
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll ``probe`` until it returns something truthy; fail after ``timeout`` seconds saying ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Service:
    """API and workers started as a user would (``python -m anode_lab.cli …``), stopped with SIGTERM."""

    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.env = {**os.environ, "ANODE_DATA_DIR": str(data_dir), "ANODE_PORT": str(self.port), **(env or {})}
        self.api: subprocess.Popen[bytes] | None = None
        self.workers: list[subprocess.Popen[bytes]] = []
        self.url = f"http://127.0.0.1:{self.port}{API}"

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.data_dir / f"{name}-{time.monotonic_ns()}.log", "wb")
        return subprocess.Popen([sys.executable, "-m", "anode_lab.cli", *args], env={**self.env, **(env or {})},
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_api(self, headers: dict[str, str] | None = None) -> None:
        self.api = self._spawn("api", "api")
        client = httpx.Client(base_url=self.url, headers=headers or {}, timeout=5)

        def healthy() -> bool:
            assert self.api is not None and self.api.poll() is None, f"the API exited: {self.logs('api')}"
            try:
                return client.get("/health").status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy, 60, "the API to answer /health")
        client.close()

    def start_worker(self, device: str = "cpu", env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """A worker of ``device``; ``env`` adds to (or replaces) the service's environment for it alone."""
        worker = self._spawn("worker", "worker", "--device", device, env=env)
        self.workers.append(worker)
        return worker

    def start(self, workers: int = 1, device: str = "cpu") -> Service:
        """The API, then ``workers`` workers of ``device``, waiting until all of them heartbeat; stops all on error."""
        try:
            self.start_api()
            for _ in range(workers):
                self.start_worker(device)
            if workers:
                with httpx.Client(base_url=self.url, timeout=10) as client:
                    self.wait_workers(client, workers)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_workers(self, client: httpx.Client, count: int) -> None:
        wait_for(lambda: len(client.get("/health").json()["workers"]) >= count, 90, f"{count} live workers")

    def logs(self, prefix: str) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.data_dir.glob(f"{prefix}-*.log")))

    def stop(self) -> None:
        processes = [*self.workers, *([self.api] if self.api else [])]
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def wait_status(client: httpx.Client, run_id: int, statuses: set[str], timeout: float = 60) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        run = client.get(f"/runs/{run_id}").json()
        return run if run["status"] in statuses else None

    return wait_for(probe, timeout, f"run {run_id} to reach {sorted(statuses)}")


def submit(client: httpx.Client, kind: str, spec: dict[str, Any], **extra: Any) -> int:
    """Create a run through the API (201 expected) and return its id."""
    response = client.post("/runs", json={"kind": kind, "spec": spec, **extra})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


@contextmanager
def in_process_worker(settings: Any) -> Iterator[Any]:
    """A migrated store and a ``WorkerProcess`` driven by the test itself (no subprocess, no consumer loop)."""
    from backend.db import migrate
    from backend.workers.process import WorkerProcess

    migrate(settings.db_url, settings.data_dir)
    process = WorkerProcess(settings, "cpu")
    try:
        yield process
    finally:
        process.close()


@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``mount`` (created), unmounted after; skips where this process may not
    mount (not root, or a kernel that refuses), as the simulated ENOSPC tests cover that case."""
    import pytest

    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip() or 'not root'}); the simulated "
                    "ENOSPC tests cover this")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path, leave: int) -> Path:
    """Fill ``disk`` with a ballast file until about ``leave`` bytes are free; returns the ballast."""
    ballast = disk / "ballast"
    with ballast.open("wb", buffering=0) as handle:
        with contextlib.suppress(OSError):
            while True:
                handle.write(b"\0" * 4096)
        handle.truncate(max(0, handle.tell() - leave))
    return ballast

NOT_A_FORM = {"X-Requested-With": "anode-lab-tests"}
"""What a client that is not a browser form sends with a POST that has no JSON body (cancel, rerun): the API
refuses such a POST without it (see ``backend.security.cross_site_refusal``)."""
