"""Metrics in batches (issue 23, item 5): a run's child only appends each report to a queue; a sender thread sends
them to the worker in batches; the child waits for its worker only before a checkpoint (or when it has not heard
from it for a permit's length). Every metric a run reports is stored exactly once whether the run ends normally,
is cancelled, or is killed after a flush boundary (a checkpoint) and resumed.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from multiprocessing import Pipe
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_helpers import EAGER, TRAIN_SMALL, Service, in_process_worker, submit, wait_for, wait_status
from test_faults import assert_every_step_once, last_step

from anode_lab.specs import parse_spec
from backend.runs import journal, lifecycle, repository as runs
from backend.runs.ingest import MetricWriter
from backend.settings import Settings
from backend.workers.process import WorkerProcess
from backend.workers.uplink import PERMIT_SECONDS, Uplink

LONG_TRAIN = {**TRAIN_SMALL, "n_samples": 1024, "batch_size": 16, "epochs": 4, "checkpoint_every": 10}
"""192 steps of a few milliseconds, a checkpoint every 10."""


# ----------------------------------------------------------------------------------- the child's side alone
def batches(conn: Connection, until: str, timeout: float = 10.0) -> list[list[tuple[Any, ...]]]:
    """The batches the child sends, up to and including the one holding a report of kind ``until``."""
    got: list[list[tuple[Any, ...]]] = []
    while conn.poll(timeout):
        kind, batch = conn.recv()
        assert kind == "batch"
        got.append(batch)
        if any(report[0] == until for report in batch):
            return got
    raise AssertionError(f"no {until!r} within {timeout} s; got {got}")


def gone() -> None:
    """In place of ending the process when the test's end of the pipe closes."""


@pytest.fixture
def pipe() -> Iterator[tuple[Connection, Connection]]:
    worker, child = Pipe()
    yield worker, child
    worker.close()
    child.close()


def test_reports_travel_in_order_in_a_few_batches(pipe: tuple[Connection, Connection]) -> None:
    worker, child = pipe
    uplink = Uplink(child, batch_seconds=0.2, worker_gone=gone)
    for step in range(1, 501):
        uplink.on_metrics(step, {"train_loss": 1.0 / step})
        uplink.on_progress(step, 500, "")
    uplink.close(("done", "succeeded", {}, ""))
    got = batches(worker, "done")
    reports = [report for batch in got for report in batch]
    assert [r[1] for r in reports if r[0] == "metrics"] == list(range(1, 501))  # each once, in order
    assert reports[-1][0] == "done" and len(reports) == 1001
    assert len(got) <= 3, [len(batch) for batch in got]  # 1001 reports made in far less than 0.2 s


def test_the_step_waits_for_its_worker_only_before_a_checkpoint_or_after_its_permit(
        pipe: tuple[Connection, Connection]) -> None:
    """No permit yet: ``should_stop`` asks, behind the reports made before it, and waits. With a permit it answers
    at once (nothing is asked); ``before_checkpoint`` always asks; a stop sent unasked is seen at the next step."""
    worker, child = pipe
    uplink = Uplink(child, batch_seconds=3600, worker_gone=gone)  # only a question (or close) sends anything
    answers: list[bool] = []

    def steps() -> None:
        uplink.on_metrics(1, {"train_loss": 1.0})
        answers.append(uplink.should_stop())  # no permit: asks
        uplink.on_metrics(2, {"train_loss": 0.5})
        answers.append(uplink.should_stop())  # within the permit: does not ask
        uplink.before_checkpoint()  # asks
        answers.append(uplink.should_stop())

    step_thread = threading.Thread(target=steps)
    step_thread.start()
    [first] = batches(worker, "ask")
    assert first == [("metrics", 1, {"train_loss": 1.0}), ("ask",)]
    worker.send(("go", time.monotonic() + 60, True))
    [second] = batches(worker, "ask")
    assert second == [("metrics", 2, {"train_loss": 0.5}), ("ask",)]  # the second should_stop did not ask
    worker.send(("go", time.monotonic() + 60, True))
    step_thread.join(10)
    assert answers == [False, False, False]

    worker.send(("stop", time.monotonic() + 60, False))  # a cancel, unasked
    wait_for(lambda: uplink.should_stop() or None, 5, "the stop to be seen")
    uplink.close(("done", "cancelled", {}, ""))
    assert batches(worker, "done") == [[("done", "cancelled", {}, "")]]  # no question was needed for it


def test_an_expired_permit_makes_the_step_ask(pipe: tuple[Connection, Connection]) -> None:
    """A worker that stops renewing (stalled, or its lease lost) holds its child at the next step after the
    permit ends."""
    worker, child = pipe
    uplink = Uplink(child, batch_seconds=3600, worker_gone=gone)
    worker.send(("go", time.monotonic() + 0.2, False))
    wait_for(lambda: uplink._permit_until > 0 or None, 5, "the permit")
    assert uplink.should_stop() is False  # within the permit: no question
    time.sleep(0.25)
    asking = threading.Thread(target=uplink.should_stop)
    asking.start()
    assert batches(worker, "ask") == [[("ask",)]]
    assert asking.is_alive()  # waits for the answer
    worker.send(("go", time.monotonic() + PERMIT_SECONDS, True))
    asking.join(5)
    assert not asking.is_alive()
    uplink.close(("done", "succeeded", {}, ""))


# -------------------------------------------------------------------------------- a real child, stored
@pytest.fixture
def worker(tmp_path: Path) -> Iterator[WorkerProcess]:
    settings = Settings(data_dir=tmp_path, metrics_flush_seconds=0.25, cancel_poll_seconds=0.05, torch_threads=1)
    with in_process_worker(settings) as process:
        yield process


def stored_run(worker: WorkerProcess, spec: dict[str, Any]) -> int:
    with worker.db.session(write=True) as session:
        return runs.add(session, kind="train", name="", spec=parse_spec("train", spec).model_dump(mode="json"),
                        device="cpu", tags=[]).id


@pytest.fixture
def received(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The steps of every ``train_loss`` report the worker's writer received, in order (the journal itself goes
    with the run's scratch folder when the run ends)."""
    steps: list[int] = []
    add_many = MetricWriter.add_many

    def recording(self: MetricWriter, reports: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        steps.extend(step for step, values in reports if "train_loss" in values)
        add_many(self, reports)

    monkeypatch.setattr(MetricWriter, "add_many", recording)
    return steps


def stored_metrics(worker: WorkerProcess, run_id: int) -> tuple[Any, dict[str, list[int]]]:
    with worker.db.session() as session:
        run = runs.get(session, run_id)
        stored: dict[str, list[int]] = {}
        for name, step, _ in runs.read_metrics(session, run_id):
            stored.setdefault(name, []).append(step)
    return run, stored


def test_a_run_that_ends_stores_every_reported_step_once(worker: WorkerProcess, received: list[int]) -> None:
    run_id = stored_run(worker, {**TRAIN_SMALL, "epochs": 3})
    worker.execute(run_id)
    run, stored = stored_metrics(worker, run_id)
    assert run.status == "succeeded", run.message
    steps = list(range(1, run.summary["steps"] + 1))
    for name in ("train_loss", "train_acc", "grad_norm", "step_time", "lr"):
        assert sorted(stored[name]) == steps, name
    assert received == steps  # reported once each: no step sent twice
    assert sorted(stored["test_acc"]) == [steps[-1] * (epoch + 1) // 3 for epoch in range(3)]


def test_a_cancelled_run_stores_every_step_up_to_the_cancel_once(worker: WorkerProcess, received: list[int]) -> None:
    run_id = stored_run(worker, LONG_TRAIN)

    def cancel_at_step_20() -> None:
        def at_20() -> bool | None:
            with worker.db.session() as session:
                return (runs.last_step(session, run_id) or 0) >= 20 or None

        wait_for(at_20, 120, "step 20", interval=0.01)
        with worker.db.session(write=True) as session:
            assert lifecycle.cancel(session, run_id)

    canceller = threading.Thread(target=cancel_at_step_20)
    canceller.start()
    worker.execute(run_id)
    canceller.join()
    run, stored = stored_metrics(worker, run_id)
    assert run.status == "cancelled", run.message
    last = run.summary["steps"]
    assert 20 <= last < 192 and run.message == f"cancelled after step {last}"
    assert sorted(stored["train_loss"]) == list(range(1, last + 1))
    assert received == list(range(1, last + 1))


# ----------------------------------------------------------------------- killed after a flush boundary
def test_a_run_killed_after_a_checkpoint_keeps_what_was_flushed_and_resumes_without_doubles(tmp_path: Path) -> None:
    """The worker and its run's child killed -9 right after the child wrote a checkpoint (a flush boundary): every
    step up to the checkpoint is in the journal (a checkpoint never runs ahead of the metrics), what was stored
    before the kill stays as it was, and the run resumed by another worker stores every step once."""
    service = Service(tmp_path, {**EAGER, "ANODE_METRICS_FLUSH_SECONDS": "0.25"}).start()
    try:
        with httpx.Client(base_url=service.url, timeout=10) as client:
            run_id = submit(client, "train", LONG_TRAIN)
            folder = service.data_dir / "runs" / str(run_id)

            def checkpoint() -> int:
                return max((int(p.stem.split("-")[1]) for p in (folder / "checkpoints").glob("step-*.pt")), default=0)

            wait_for(lambda: last_step(client, run_id) >= 20 or None, 120, "step 20 stored")
            stored_at = checkpoint()
            wait_for(lambda: checkpoint() > stored_at or None, 60, "the next checkpoint", interval=0.005)
            [victim] = service.workers
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait(10)
            saved = checkpoint()
            journaled = sorted({step for step, values in journal.read(folder) if "train_loss" in values})
            assert journaled[:saved] == list(range(1, saved + 1)), (saved, journaled)
            before = client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()
            kept = dict(zip(before["series"]["train_loss"]["steps"], before["series"]["train_loss"]["values"],
                            strict=True))

            service.start_worker()
            run = wait_status(client, run_id, {"succeeded", "failed", "cancelled"}, timeout=180)
            assert run["status"] == "succeeded" and run["attempt"] == 2, run
            assert_every_step_once(client, run)
            after = client.get(f"/runs/{run_id}/metrics", params={"series": "train_loss"}).json()
            final = dict(zip(after["series"]["train_loss"]["steps"], after["series"]["train_loss"]["values"],
                             strict=True))
            assert kept and {step: final[step] for step in kept} == kept  # a resumed run repeats them bit for bit
            assert last_step(client, run_id) == run["summary"]["steps"]
    finally:
        service.stop()
