"""The worker's store-side logic in process, on a temporary SQLite: skipped messages, recovery of queued runs, the
metrics writer. The lifecycle rules (claim, lease, reap, cancel) are tested once, in ``test_lifecycle.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from service_helpers import in_process_worker

from backend.models import Run
from backend.runs import journal, lifecycle, repository as runs
from backend.runs.ingest import MetricWriter
from backend.runs.lifecycle import Hold
from backend.settings import Settings
from backend.workers.process import WorkerProcess


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    settings = Settings(data_dir=tmp_path, retry_limit=1, heartbeat_timeout_seconds=5, cancel_poll_seconds=0)
    with in_process_worker(settings) as process:
        yield process


def new_run(worker: WorkerProcess, device: str = "cpu") -> int:
    with worker.db.session(write=True) as session:
        return runs.add(session, kind="train", name="", spec={}, device=device, tags=[]).id


def row(worker: WorkerProcess, run_id: int) -> Run:
    with worker.db.session() as session:
        run = runs.get(session, run_id)
        assert run is not None
        return run


def held(worker: WorkerProcess) -> Hold:
    """A run claimed by ``worker``, as the worker holds it."""
    run_id = new_run(worker)
    with worker.db.session(write=True) as session:
        lease = lifecycle.claim(session, run_id, worker.id, "cpu")
    assert lease is not None
    return Hold(worker.db, lease, window=60)


@pytest.mark.parametrize("status", ["succeeded", "cancelled", "running"])
def test_execute_skips_runs_that_are_not_queued(worker: WorkerProcess, status: str) -> None:
    run_id = new_run(worker)
    with worker.db.session(write=True) as session:
        session.get(Run, run_id).status = status  # type: ignore[union-attr]
    worker.execute(run_id)  # a duplicate or late message: nothing happens, nothing is imported from torch
    assert row(worker, run_id).status == status and row(worker, run_id).attempt == 0


def test_stored_queued_runs_are_queued_again_at_start(worker: WorkerProcess) -> None:
    cpu, gpu = new_run(worker), new_run(worker, device="cuda")
    worker._recover_queued()
    task = worker.queues.hueys["cpu"].dequeue()
    assert task is not None and task.args == (cpu,) and worker.queues.hueys["cpu"].pending_count() == 0
    assert gpu != cpu


def test_metric_writer_stores_complete_steps_and_replays_its_journal(worker: WorkerProcess, tmp_path: Path) -> None:
    hold = held(worker)
    run_id = hold.run_id
    writer = MetricWriter(hold, tmp_path / "w", flush_seconds=3600)
    for step in range(1, 6):
        writer.add(step, {"loss": 1.0 / step, "nan": float("nan")})
    writer.add(5, {"acc": 0.5})  # the same step, reported in two calls, with other series
    writer._flush(final=False)
    with worker.db.session() as session:
        assert runs.last_step(session, run_id) == 4  # step 5 may still grow: held back
    writer.close()
    with worker.db.session() as session:
        rows = runs.read_metrics(session, run_id)
    assert ("acc", 5, 0.5) in rows and ("nan", 3, None) in rows and len(rows) == 11
    reports = list(journal.read(tmp_path / "w"))
    assert reports[0] == (1, {"loss": 1.0, "nan": pytest.approx(float("nan"), nan_ok=True)})
    assert reports[-1] == (5, {"acc": 0.5}) and len(reports) == 6
    with (tmp_path / "w" / journal.FILE).open("ab") as torn:
        torn.write(b"\x40\x00\x00\x00(partial")  # the writer was killed mid-write
    assert len(list(journal.read(tmp_path / "w"))) == 6
    again = MetricWriter(hold, tmp_path / "w", flush_seconds=0)
    assert again.replay() == 11  # into a store that has them already: idempotent
    with worker.db.session() as session:
        assert sorted(runs.read_metrics(session, run_id)) == sorted(rows)


def test_metric_writer_takes_numbers_of_other_types(worker: WorkerProcess, tmp_path: Path) -> None:
    import numpy as np
    import torch

    hold = held(worker)
    run_id = hold.run_id
    writer = MetricWriter(hold, tmp_path, flush_seconds=3600)
    writer.add(np.int64(1), {"a": np.float32(0.5), "b": np.int64(3), "c": torch.tensor(0.25), "d": True})
    writer.close()
    assert list(journal.read(tmp_path)) == [(1, {"a": 0.5, "b": 3.0, "c": 0.25, "d": 1.0})]
    with worker.db.session() as session:
        assert runs.read_metrics(session, run_id) == [("a", 1, 0.5), ("b", 1, 3.0), ("c", 1, 0.25), ("d", 1, 1.0)]


def test_metric_writer_thread_writes_while_the_run_goes_on(worker: WorkerProcess, tmp_path: Path) -> None:
    hold = held(worker)
    run_id = hold.run_id
    writer = MetricWriter(hold, tmp_path / "t", flush_seconds=0).start()
    for step in range(1, 201):
        writer.add(step, {"loss": float(step)})
    writer.close()
    with worker.db.session() as session:
        assert [s for _, s, _ in runs.read_metrics(session, run_id)] == list(range(1, 201))


def group_nice(text: str) -> str | None:
    """The K of an autogroup file's ``/autogroup-N nice K``; None where the kernel shows no group (the file is
    missing, or empty, as in some sandboxes)."""
    fields = text.split()
    return fields[2] if len(fields) == 3 and fields[1] == "nice" else None


@pytest.mark.parametrize("leads_its_session", [True, False])
def test_a_worker_yields_the_cpu_with_its_children_and_session(leads_its_session: bool) -> None:
    """``yield_cpu(7)``: the process's nice rises by 7 and the run children it starts inherit it; a worker that leads
    its session (as under ``anode-lab up``) gives its session's autogroup the same nice, where the kernel shows
    autogroups, and one that does not (a terminal's) leaves the group's alone."""
    import json
    import os
    import subprocess
    import sys

    group = Path("/proc/self/autogroup")
    code = ("import json, os, subprocess, sys; from pathlib import Path; "
            "from backend.workers.process import yield_cpu; "
            "yield_cpu(7); child = subprocess.run([sys.executable, '-c', 'import os; print(os.nice(0))'], "
            "capture_output=True, text=True, check=True).stdout.strip(); group = Path('/proc/self/autogroup'); "
            "print(json.dumps([os.nice(0), int(child), group.read_text() if group.exists() else '']))")
    before = group_nice(group.read_text() if group.exists() else "")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          start_new_session=leads_its_session)
    nice, child_nice, group_text = json.loads(done.stdout)
    assert nice == child_nice == min(19, os.nice(0) + 7)
    if before is not None:
        assert group_nice(group_text) == ("7" if leads_its_session else before)
        assert group_nice(group.read_text()) == before  # this test's own session is untouched either way
