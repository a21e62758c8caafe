"""Lost workers, replayed with real processes.

* A stalled worker writes nothing into a run it lost (issue 20, finding 7): worker A is stopped (SIGSTOP) mid-run,
  its lease expires, worker B re-runs the run from its checkpoint to the end; then A is woken (SIGCONT). It used to
  answer its child's "stop?" and write a checkpoint (deleting the run's others) and journal records into the
  finished run; now every write carries A's lease, which is gone, so A ends its child without letting it save and
  writes nothing: no checkpoint, journal record, metric, artifact or status.
* A dead worker is noticed in seconds (issue 23, item 2): a worker of the same host killed -9 has its run moved by
  another worker at that worker's next reaper pass, with a lease far too long to be what revealed it.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import EAGER, ENDED, TRAIN_SMALL, Service, submit, wait_for, wait_status
from test_faults import assert_every_step_once, last_step

from backend.runs import journal

LONG_TRAIN = {**TRAIN_SMALL, "n_samples": 1024, "batch_size": 16, "epochs": 4, "checkpoint_every": 10}
ENV = {**EAGER, "ANODE_METRICS_FLUSH_SECONDS": "0.5"}
"""Short leases; metrics in batches, so A is rarely stopped inside a store transaction (SQLite's write lock
would then stop everyone, which is not what this test is about)."""


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    svc = Service(tmp_path, ENV).start()
    yield svc
    for worker in svc.workers:
        if worker.poll() is None:
            os.kill(worker.pid, signal.SIGCONT)  # a stopped process would not see the SIGTERM
    svc.stop()


def snapshot(client: httpx.Client, folder: Path, run_id: int) -> dict[str, Any]:
    """Everything of the run a worker could write: its row, metrics, artifact index, journal and checkpoints."""
    run = client.get(f"/runs/{run_id}").json()
    run.pop("status_detail")  # says which workers are alive, not what was written
    return {"run": run, "metrics": client.get(f"/runs/{run_id}/metrics").json(),
            "artifacts": client.get(f"/runs/{run_id}/artifacts").json(),
            "journal": (folder / journal.FILE).read_bytes() if (folder / journal.FILE).exists() else None,
            "checkpoints": sorted(p.name for p in (folder / "checkpoints").iterdir()),
            "files": sorted((str(p.relative_to(folder)), p.stat().st_size, p.stat().st_mtime_ns)
                            for p in folder.rglob("*") if p.is_file())}


def stop_outside_a_write(pid: int, store: Path) -> None:
    """SIGSTOP the worker at a moment it holds no write transaction on the SQLite store: stopped inside one, it
    would keep the write lock and stop every other process (a new worker could not even start), which is not the
    case under test. A stop that lands inside one is undone and tried again."""
    for _ in range(100):
        os.kill(pid, signal.SIGSTOP)
        probe = sqlite3.connect(store, timeout=0.2, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:  # "database is locked": stopped inside a write
            os.kill(pid, signal.SIGCONT)
            time.sleep(0.05)
        finally:
            probe.close()
    raise AssertionError("the worker held the store's write lock at each of 100 stops")


def test_a_worker_woken_after_its_run_was_finished_elsewhere_writes_nothing(service: Service) -> None:
    with httpx.Client(base_url=service.url, timeout=10) as client:
        run_id = submit(client, "train", LONG_TRAIN)
        wait_for(lambda: (client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()
                          ["last_step"] or 0) >= 25, 90, "step 25")
        stalled = service.workers[0]
        stop_outside_a_write(stalled.pid, service.data_dir / "anode.db")  # the worker only: its run's child waits
        service.start_worker()
        run = wait_status(client, run_id, ENDED, timeout=180)
        assert run["status"] == "succeeded" and run["attempt"] == 2, run
        folder = service.data_dir / "runs" / str(run_id)
        assert not folder.exists()  # B concluded the run: its files are in the store, its working folder removed
        sentinel = folder / "checkpoints" / "step-000000001.pt"
        sentinel.parent.mkdir(parents=True)
        sentinel.write_bytes(b"a checkpoint a save by A would delete")
        before = snapshot(client, folder, run_id)

        os.kill(stalled.pid, signal.SIGCONT)
        wait_for(lambda: "lease lost" in service.logs("worker"), 30, "worker A to find its lease lost")
        wait_for(lambda: len(client.get("/health").json()["workers"]) == 2, 30, "both workers to heartbeat")
        after = snapshot(client, folder, run_id)
        assert after == before
        assert sentinel.exists() and before["checkpoints"] == [sentinel.name]
        steps = after["metrics"]["series"]["train_loss"]["steps"]
        assert steps == list(range(1, run["summary"]["steps"] + 1))  # every step once

        again = wait_status(client, submit(client, "demo", {"name": "non-invertible"}), ENDED, timeout=90)
        assert again["status"] == "succeeded" and stalled.poll() is None  # A is awake and still serving


def test_a_killed_worker_of_this_host_is_noticed_in_seconds_not_a_lease_later(tmp_path: Path) -> None:
    """Two workers, a 10-minute lease: the run's worker is killed -9 (with its child); the other worker's reaper sees
    its process gone and re-queues the run, which runs again within 15 s and ends with every step stored once."""
    service = Service(tmp_path, {**ENV, "ANODE_HEARTBEAT_TIMEOUT_SECONDS": "600", "ANODE_REAPER_SECONDS": "1"})
    service.start(workers=2)
    try:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            run_id = submit(client, "train", LONG_TRAIN)
            wait_for(lambda: last_step(client, run_id) >= 25, 90, "step 25")
            holder = int(client.get(f"/runs/{run_id}").json()["worker"].split(":")[1])
            victim = next(w for w in service.workers if w.pid == holder)
            os.killpg(victim.pid, signal.SIGKILL)
            killed = time.monotonic()
            victim.wait(10)
            wait_for(lambda: client.get(f"/runs/{run_id}").json()["attempt"] == 2, 60, "the run to be taken again")
            moved_in = time.monotonic() - killed
            run = wait_status(client, run_id, ENDED, timeout=120)
            assert run["status"] == "succeeded", run
            assert moved_in < 15, moved_in
            assert f"its process {holder} on " in service.logs("worker") and "is gone" in service.logs("worker")
            assert_every_step_once(client, run)
    finally:
        service.stop()
