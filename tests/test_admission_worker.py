"""A real worker runs a spec asking for 256 torch threads with at most the cores it may use (issue 20, finding 5:
``threads: 256`` ran 239 threads on 2 cores when ``ANODE_TORCH_THREADS`` was unset)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from service_helpers import ENDED, FAST_LEASES, Service, descendants, submit

SLACK = 4
"""Threads of the run's process besides torch's intra-op pool: its main thread and the few the runtime starts."""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    env = {k: v for k, v in FAST_LEASES.items() if k != "ANODE_TORCH_THREADS"}
    svc = Service(tmp_path, env)
    svc.env.pop("ANODE_TORCH_THREADS", None)
    yield svc.start(workers=1)
    svc.stop()


def threads_of(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return 0


def test_threads_256_run_with_at_most_the_cores(service: Service) -> None:
    cores = len(os.sched_getaffinity(0))
    spec = {"field": "conv", "batch": 8, "channels": 16, "size": 16, "blocks": 2, "solvers": ["euler"],
            "steps": [2, 4], "methods": [{"method": "anode"}], "timing_repeats": 1, "threads": 256, "device": "cpu"}
    worker = service.workers[0]
    with httpx.Client(base_url=service.url, timeout=10) as client:
        run_id = submit(client, "compare", spec)
        most, seen, deadline = 0, 0, time.monotonic() + 300
        while time.monotonic() < deadline:
            run = client.get(f"/runs/{run_id}").json()
            if run["status"] in ENDED:
                break
            counts = [threads_of(pid) for pid in descendants(worker.pid)]
            most, seen = max([most, *counts]), seen + (run["status"] == "running")
            time.sleep(0.02)
    assert run["status"] == "succeeded", run
    assert run["spec"]["threads"] == 256  # stored as asked; the worker clamps what it runs
    assert seen >= 5, "the run ended before its threads could be counted"
    assert most <= cores + SLACK, f"{most} threads in the run's process on {cores} cores"
