"""Fan-out of a compare sweep (:mod:`backend.runs.cells`, :mod:`backend.workers.fanout`): its parts run as their
own queue messages, a lost worker's part is queued again alone, a cancel ends every part, and the run's
``results.csv`` equals, row for row, the sweep run whole (the measured times and bytes excepted)."""

from __future__ import annotations

import csv
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from anode_lab.experiments import RunContext
from anode_lab.experiments.sweep import run_compare
from anode_lab.experiments.sweep_table import costliest_first, parts
from anode_lab.specs import CompareSpec
from anode_lab.status import RunStatus
from backend.models import Metric, Run, RunCell
from backend.runs import artifacts, cells, lifecycle, repository as runs
from backend.settings import Settings
from backend.workers import repository as workers
from backend.workers.process import WorkerProcess
from tests.service_helpers import Service, in_process_worker, submit, wait_for, wait_status

SPEC: dict[str, Any] = {"solvers": ["euler", "midpoint"], "steps": [2, 4], "blocks": 1, "batch": 4,
                        "timing_repeats": 1, "device": "cpu", "threads": 1}
MEASURED = {"peak_bytes", "memory_ratio", "cuda_peak_bytes", "forward_seconds", "backward_seconds"}
"""Columns that are measurements of this machine at this moment, not functions of the spec."""


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [{k: v for k, v in row.items() if k not in MEASURED} for row in csv.DictReader(handle)]


def stored_csv(worker: WorkerProcess, run_id: int, name: str, tmp_path: Path) -> list[dict[str, str]]:
    """A table the run keeps in the store (the worker's own folder of the run is gone once it concluded)."""
    with worker.db.session() as session:
        row = artifacts.artifact(session, run_id, name)
        assert row is not None, f"run {run_id} keeps no {name}"
        artifacts.copy_out(session, row, tmp_path / "stored" / name)
    return read_csv(tmp_path / "stored" / name)


def whole_sweep(tmp_path: Path, spec: dict[str, Any]) -> list[dict[str, str]]:
    """The rows of the sweep run whole, in one process (what one worker without fan-out runs)."""
    folder = tmp_path / "whole"
    run_compare(CompareSpec.model_validate(spec), RunContext(folder))
    return read_csv(folder / "artifacts" / "results.csv")


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    settings = Settings(data_dir=tmp_path / "data", heartbeat_timeout_seconds=5, retry_limit=2, cancel_poll_seconds=0)
    with in_process_worker(settings) as process:
        yield process


def new_run(worker: WorkerProcess, spec: dict[str, Any]) -> int:
    with worker.db.session(write=True) as session:
        return runs.add(session, kind="compare", name="", spec=spec, device="cpu", tags=[]).id


def part_rows(worker: WorkerProcess, run_id: int) -> list[tuple[int, str, int]]:
    with worker.db.session() as session:
        return [(c.part, c.status, c.attempt) for c in session.scalars(
            select(RunCell).where(RunCell.run_id == run_id).order_by(RunCell.part))]


def run_row(worker: WorkerProcess, run_id: int) -> Run:
    with worker.db.session() as session:
        run = session.get(Run, run_id)
        assert run is not None
        return run


def gone_pid() -> int:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()
    return done.pid


def test_a_killed_workers_part_is_queued_again_alone_and_the_table_equals_the_whole_sweep(
        worker: WorkerProcess, tmp_path: Path) -> None:
    """Four parts: 0 and 1 run here; 2 is held by a worker of this host whose process is gone (killed); the reaper
    queues part 2 again, alone (0 and 1 keep their rows and first attempt), and once 2 and 3 ran, ``results.csv``
    equals the whole sweep's, row for row."""
    run_id = new_run(worker, SPEC)
    assert len(parts(CompareSpec.model_validate(SPEC))) == 4
    worker.execute(run_id)  # claims the run and fans it out
    assert run_row(worker, run_id).worker == runs.FANNED_OUT
    assert part_rows(worker, run_id) == [(p, RunStatus.QUEUED, 0) for p in range(4)]
    assert worker.queues.sizes()["cpu"] == 4
    worker.execute(run_id, 0)
    worker.execute(run_id, 1)
    dead = gone_pid()
    with worker.db.session(write=True) as session:
        workers.register(session, worker_id="killed", device="cpu", hostname=socket.gethostname(), pid=dead,
                         device_name="cpu", process_space=lifecycle.process_space())
        assert cells.claim(session, run_id, 2, "killed") is not None
    progress = run_row(worker, run_id).progress
    assert progress is not None and progress["total"] == len(CompareSpec.model_validate(SPEC).grid())
    worker.reap()
    assert part_rows(worker, run_id) == [(0, RunStatus.SUCCEEDED, 1), (1, RunStatus.SUCCEEDED, 1),
                                         (2, RunStatus.QUEUED, 1), (3, RunStatus.QUEUED, 0)]
    worker.execute(run_id, 3)
    assert run_row(worker, run_id).status == RunStatus.RUNNING  # part 2 still to go
    worker.execute(run_id, 2)
    run = run_row(worker, run_id)
    assert run.status == RunStatus.SUCCEEDED, run.message
    assert [attempt for _, _, attempt in part_rows(worker, run_id)] == [1, 1, 2, 1]
    grid = CompareSpec.model_validate(SPEC).grid()
    assert run.progress == {"done": len(grid), "total": len(grid), "note": "4 parts done"}
    fanned = stored_csv(worker, run_id, "results.csv", tmp_path)
    assert fanned == whole_sweep(tmp_path, SPEC)
    assert [row["cell"] for row in fanned] == [str(i) for i in range(len(grid))]
    assert stored_csv(worker, run_id, "slopes.csv", tmp_path)
    assert not worker.settings.run_dir(run_id).exists()  # the worker's working copy, removed once stored
    with worker.db.session() as session:
        steps = sorted(set(session.scalars(select(Metric.step).where(Metric.run_id == run_id))))
    assert steps == list(range(len(grid)))


def test_parts_are_queued_costliest_first(worker: WorkerProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    """Field evaluations per part: N_t x stages x (cells + the Direct reference); the longest go first, so the
    last parts to start on a free worker are short ones."""
    queued: list[int | None] = []
    monkeypatch.setattr(worker.queues, "enqueue", lambda run_id, device, part=None: queued.append(part))
    run_id = new_run(worker, SPEC)
    worker.execute(run_id)
    cut = parts(CompareSpec.model_validate(SPEC))
    assert [(cut[part][0].solver, cut[part][0].steps) for part in queued if part is not None] == [
        ("midpoint", 4), ("euler", 4), ("midpoint", 2), ("euler", 2)]  # 2x4, 1x4 and 2x2 (a tie: grid order), 1x2


def test_an_adaptive_part_costs_its_step_limit() -> None:
    spec = CompareSpec.model_validate({**SPEC, "solvers": ["euler", "dopri5"], "steps": [4], "tolerances": [1e-3],
                                       "step_limit": 3})
    cut = parts(spec)
    assert [part[0].solver for part in cut] == ["euler", "dopri5"]
    assert costliest_first(spec, cut) == [1, 0]  # dopri5: 7 stages x 3 steps at most = 21 > euler's 1 x 4
    longer = CompareSpec.model_validate({**spec.model_dump(), "steps": [64], "step_limit": 1})
    assert costliest_first(longer, parts(longer)) == [0, 1]  # 7 x 1 < 1 x 64


def test_a_cancel_mid_fan_out_ends_every_part_and_keeps_the_rows_done(worker: WorkerProcess, tmp_path: Path) -> None:
    run_id = new_run(worker, SPEC)
    worker.execute(run_id)
    worker.execute(run_id, 0)
    with worker.db.session(write=True) as session:
        assert lifecycle.cancel(session, run_id)
    assert run_row(worker, run_id).status == RunStatus.RUNNING  # parts 1-3 are still queued
    for part in (1, 2, 3):
        worker.execute(run_id, part)  # each is cancelled at its claim, never run
    run = run_row(worker, run_id)
    assert run.status == RunStatus.CANCELLED
    assert [status for _, status, _ in part_rows(worker, run_id)] == [RunStatus.SUCCEEDED] + [RunStatus.CANCELLED] * 3
    size = len(parts(CompareSpec.model_validate(SPEC))[0])
    assert run.message == f"cancelled: {size} of {len(CompareSpec.model_validate(SPEC).grid())} cells done"
    rows = stored_csv(worker, run_id, "results.csv", tmp_path)
    assert [row["cell"] for row in rows] == [str(i) for i in range(size)]


def test_a_failed_part_fails_the_sweep_naming_its_cells(worker: WorkerProcess) -> None:
    """An adaptive part past its step limit fails; the run fails at once naming the part's cells, and the parts
    still queued are never run (their claim finds the run concluded)."""
    spec = {**SPEC, "solvers": ["euler", "dopri5"], "tolerances": [1e-3, 1e-9], "step_limit": 4}
    run_id = new_run(worker, spec)
    grid = parts(CompareSpec.model_validate(spec))
    failing = next(i for i, part in enumerate(grid) if part[0].rtol == 1e-9)
    worker.execute(run_id)
    worker.execute(run_id, failing)
    run = run_row(worker, run_id)
    assert run.status == RunStatus.FAILED
    first, last = grid[failing][0].index, grid[failing][-1].index
    assert f"part {failing}, cells {first}-{last} (dopri5 rtol=1e-09), failed" in run.message, run.message
    worker.execute(run_id, 0)
    assert part_rows(worker, run_id)[0][1] == RunStatus.QUEUED  # not claimed: the run is over


def test_two_workers_share_a_sweep_and_its_table_equals_the_whole_sweep(tmp_path: Path) -> None:
    """Two real workers: every part runs once, the run succeeds, ``results.csv`` (served by the API) equals the
    whole sweep's row for row."""
    service = Service(tmp_path / "service", env={"ANODE_TORCH_THREADS": "1"})
    (tmp_path / "service").mkdir()
    service.start(workers=2)
    try:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            run_id = submit(client, "compare", SPEC)
            run = wait_status(client, run_id, {"succeeded", "failed", "cancelled"}, timeout=240)
            assert run["status"] == "succeeded", run
            text = client.get(f"/runs/{run_id}/artifacts/results.csv").text
        served = tmp_path / "served.csv"
        served.write_text(text)
        assert read_csv(served) == whole_sweep(tmp_path, SPEC)
        logs = service.logs("worker")
        for part in range(4):
            assert logs.count(f"run {run_id} part {part} attempt 1 started") == 1, logs
    finally:
        service.stop()


def test_a_running_part_stops_at_its_next_cell_after_a_cancel(worker: WorkerProcess) -> None:
    """A cancel while a part runs: the part stops before its next cell (it asks the run's cancel flag), the parts
    still queued are cancelled at their claim, and the run ends cancelled once the last of them ends."""
    spec = {**SPEC, "steps": [128], "batch": 64, "timing_repeats": 3}  # 2 parts of 5 cells, each a while
    run_id = new_run(worker, spec)
    worker.execute(run_id)
    running = threading.Thread(target=worker.execute, args=(run_id, 0))
    running.start()

    def first_cell_stored() -> bool:
        with worker.db.session() as session:
            return session.scalar(select(Metric.step).where(Metric.run_id == run_id).limit(1)) is not None

    try:
        wait_for(first_cell_stored, 120, "the first cell's metrics", interval=0.02)
        with worker.db.session(write=True) as session:
            assert lifecycle.cancel(session, run_id)
    finally:
        running.join(120)
    assert part_rows(worker, run_id)[0][1] == RunStatus.CANCELLED
    with worker.db.session() as session:
        stored = set(session.scalars(select(Metric.step).where(Metric.run_id == run_id)))
    assert 1 <= len(stored) < len(parts(CompareSpec.model_validate(spec))[0])  # stopped inside the part
    worker.execute(run_id, 1)
    assert run_row(worker, run_id).status == RunStatus.CANCELLED
