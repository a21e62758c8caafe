"""The worker's side of fan-out (:mod:`backend.runs.cells`): cut a claimed compare sweep into parts, run one
part in a child process, and conclude the run when its last part ends.

Nothing passes through a disk: a part's rows go into the store with its end, and the worker that concludes the
run (of whichever host) writes the run's tables from the stored rows, in cell order, and keeps them in the store
as the run's artifacts."""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from typing import TYPE_CHECKING, Any

from anode_lab.experiments.context import RunContext
from anode_lab.experiments.sweep_table import costliest_first, parts, summary_of, write_tables
from anode_lab.specs import parse_spec
from anode_lab.specs.compare import CompareSpec
from anode_lab.status import RunStatus
from backend.db import after_commit
from backend.queue import queue_for_device
from backend.runs import cells, repository as runs
from backend.runs.ingest import MetricWriter
from backend.runs.lifecycle import Hold, LeaseLost
from backend.workers.child import error_summary, is_disk_full
from backend.workers.supervise import Ended, Supervisor

if TYPE_CHECKING:
    from backend.workers.process import WorkerProcess

log = logging.getLogger("anode.worker")


def sweep_parts(worker: WorkerProcess, kind: str, spec: dict[str, Any]) -> tuple[list[int], list[int]] | None:
    """When this run fans out (a compare sweep of several parts, ``ANODE_FAN_OUT`` on): the cells per part, and
    the parts in the order to queue them (the costliest first, :func:`costliest_first`)."""
    if kind != "compare" or not worker.settings.fan_out:
        return None
    compare = CompareSpec.model_validate(spec)
    cut = parts(compare)
    return ([len(part) for part in cut], costliest_first(compare, cut)) if len(cut) > 1 else None


def fan_out(worker: WorkerProcess, hold: Hold, plan: tuple[list[int], list[int]]) -> None:
    """Give the run to its parts and queue them (in ``plan``'s order); a retried fan-out whose parts are all done
    concludes at once."""
    sizes, order = plan
    device = queue_for_device(worker.torch_device)
    with worker.db.session(write=True) as session:
        queue = cells.fan_out(session, hold.lease, sizes)
        if queue is None:
            log.warning("run %s: lease lost before its fan-out", hold.run_id)
            return
        queue.sort(key=order.index)
        cells.store_progress(session, hold.run_id)
        for part in queue:
            after_commit(session, lambda part=part: worker.queues.enqueue(hold.run_id, device, part))  # type: ignore[misc]
    log.info("run %s fanned out: %d parts queued (%d in all)", hold.run_id, len(queue), len(sizes))
    if not queue:
        settle(worker, hold.run_id, None)


def execute_part(worker: WorkerProcess, run_id: int, part: int) -> None:
    """Body of ``runs.execute(run_id, part)``: claim the part, run it in a child, end it, settle the run."""
    with worker.db.session(write=True) as session:
        lease = cells.claim(session, run_id, part, worker.id)
        if lease is None:
            by_status = cells.store_progress(session, run_id)
    if lease is None:
        log.info("run %s part %s is not queued any more (or its run was cancelled); skipped", run_id, part)
        if not by_status.get(RunStatus.QUEUED) and not by_status.get(RunStatus.RUNNING):
            settle(worker, run_id, None)
        return
    hold = cells.PartHold(worker.db, lease, part, window=worker.settings.heartbeat_timeout_seconds / 2)
    worker.hold = hold
    try:
        _run_part(worker, hold)
    finally:
        hold.close()
        worker.hold = None


def _run_part(worker: WorkerProcess, hold: cells.PartHold) -> None:
    with worker.db.session() as session:
        run = runs.get(session, hold.run_id)
        assert run is not None
        kind, spec_data = run.kind, run.spec
    workdir = worker.settings.run_dir(hold.run_id) / "parts" / str(hold.part)
    try:
        spec = worker.admitted_spec(kind, spec_data)
        writer = MetricWriter(hold, workdir, worker.settings.metrics_flush_seconds)
        writer.replay()
    except LeaseLost:
        return
    except Exception as exc:  # noqa: BLE001 - whatever refuses the part fails the run
        _fail(worker, hold, f"{type(exc).__name__}: {exc}", error_summary(exc))
        return
    writer.start()
    log.info("run %s part %s attempt %s started", hold.run_id, hold.part, hold.lease.attempt)
    try:
        ended = Supervisor(worker, hold, writer).run(kind, spec, workdir, part=hold.part)
        writer.close()
    except Exception as exc:  # noqa: BLE001
        with contextlib.suppress(Exception):
            writer.close()
        ended = Ended("error", reason="disk" if is_disk_full(exc) else "error", error=error_summary(exc))
    if hold.lost.is_set() or ended.kind == "lost":
        log.warning("run %s part %s: lease lost; this attempt writes nothing", hold.run_id, hold.part)
    elif hold.cancel_accepted():  # cancel wins once accepted, as for a run
        _end(worker, hold, RunStatus.CANCELLED)
    elif ended.kind == "done" and ended.status == RunStatus.SUCCEEDED:
        _end(worker, hold, RunStatus.SUCCEEDED, json.loads(str(ended.summary["rows"])))
        shutil.rmtree(workdir, ignore_errors=True)  # its rows and metrics are in the store
        for folder in (workdir.parent, workdir.parent.parent):  # parts/, then the run's folder, once empty
            with contextlib.suppress(OSError):
                folder.rmdir()
    elif ended.kind in ("done", "stopped"):  # a shutdown: the part goes back to the queue
        if hold.give_back():
            worker.queues.enqueue(hold.run_id, queue_for_device(worker.torch_device), hold.part)
    else:
        _fail(worker, hold, ended.describe(worker.settings), ended.error)


def _end(worker: WorkerProcess, hold: cells.PartHold, status: str, rows: list[dict[str, Any]] | None = None) -> None:
    by_status = hold.end(status, rows)
    if by_status is not None and not by_status.get(RunStatus.QUEUED) and not by_status.get(RunStatus.RUNNING):
        settle(worker, hold.run_id, None)


def _fail(worker: WorkerProcess, hold: cells.PartHold, message: str, error: dict[str, Any] | None) -> None:
    if hold.end(RunStatus.FAILED) is None:
        return
    with worker.db.session() as session:
        spec = CompareSpec.model_validate(runs.get(session, hold.run_id).spec)  # type: ignore[union-attr]
    cells_of = parts(spec)[hold.part]
    where = f"cells {cells_of[0].index}-{cells_of[-1].index} ({cells_of[0].solver} {cells_of[0].where})"
    text = f"part {hold.part}, {where}, failed: {message}"
    settle(worker, hold.run_id, {"type": (error or {}).get("type", "CellFailed"), "message": text,
                                 "traceback": (error or {}).get("traceback", [])})


def settle(worker: WorkerProcess, run_id: int, error: dict[str, Any] | None) -> None:
    """Conclude a fanned-out run whose parts all ended (or, with ``error``, one failed): take its lease back
    (once), write its tables from the stored rows in cell order, store its outcome."""
    with worker.db.session(write=True) as session:
        lease = cells.take_conclusion(session, run_id, worker.id)
    if lease is None:
        return
    hold = Hold(worker.db, lease, window=worker.settings.heartbeat_timeout_seconds / 2)
    try:
        with worker.db.session() as session:
            run = runs.get(session, run_id)
            assert run is not None
            spec = parse_spec("compare", run.spec)
            rows = cells.rows(session, run_id)
            done, total, _, by_status = cells.progress(session, run_id)
        assert isinstance(spec, CompareSpec)
        hold.progress = (done, total, f"{by_status.get(RunStatus.SUCCEEDED, 0)} parts done")
        ctx = RunContext(worker.settings.run_dir(run_id))
        hold.confirm()
        if error is not None:
            write_tables(spec, rows, ctx, slopes=False)
            outcome: dict[str, Any] = {"status": RunStatus.FAILED, "message": error["message"], "error": error}
        elif by_status.get(RunStatus.CANCELLED) or run.cancel_requested:
            write_tables(spec, rows, ctx, slopes=False)
            outcome = {"status": RunStatus.CANCELLED, "summary": summary_of(spec, rows),
                       "message": f"cancelled: {len(rows)} of {total} cells done"}
        else:
            write_tables(spec, rows, ctx)
            outcome = {"status": RunStatus.SUCCEEDED, "summary": summary_of(spec, rows)}
        worker._finish(hold, **outcome)
    except LeaseLost as exc:
        log.warning("%s", exc)
    finally:
        hold.close()
