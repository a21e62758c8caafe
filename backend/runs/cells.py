"""Fan-out: a compare sweep's parts (the cells of one setting each) run as their own queue messages
``{"run_id": R, "cell": i}`` on every worker of the run's queue, and the sweep stays one run.

* The worker that claims the run cuts it into parts (:func:`fan_out`, under the run's lease): one ``run_cells`` row
  each, queued, and one message each. The run stays *running*, held by :data:`FANNED_OUT` instead of a worker;
  the reaper leaves its lease alone and watches its parts' leases instead.
* A part is claimed, renewed, reaped and re-queued like a run (its own lease: run, worker, attempt; a part is
  re-queued alone, so no other part is measured again). Its metrics go into the run's (step = cell index), under
  the part's lease. A part claimed after a cancel is cancelled without running.
* The run's progress counts the cells of done parts. Whichever worker ends the last part takes the run's lease
  back (:func:`take_conclusion`), writes ``results.csv`` in cell order from the parts' stored rows, and concludes
  the run; a failed part concludes it at once as failed, naming its cells, and the parts still running lose
  their lease.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from anode_lab.status import RunStatus
from backend.db import Database, utcnow
from backend.models import Run, RunCell
from backend.runs.lifecycle import Hold, Lease, LeaseLost, process_alive
from backend.runs.repository import FANNED_OUT, MetricRow, _changed_one, upsert_metrics
from backend.workers import repository as workers

DONE = RunStatus.SUCCEEDED
log = logging.getLogger("anode.cells")


def _fanned(run_id: int) -> Any:
    return select(Run.id).where(Run.id == run_id, Run.status == RunStatus.RUNNING, Run.worker == FANNED_OUT)


def fan_out(session: Session, lease: Lease, sizes: Sequence[int]) -> list[int] | None:
    """Give the run ``lease`` holds to its parts (``sizes[i]`` cells in part ``i``); the parts to queue (a retried
    fan-out keeps the parts already done). ``None`` when the lease was lost."""
    if not _changed_one(session, update(Run).where(Run.id == lease.run_id, Run.status == RunStatus.RUNNING,
                                                   Run.worker == lease.worker, Run.attempt == lease.attempt)
                        .values(worker=FANNED_OUT, heartbeat=utcnow())):
        return None
    have = {row.part: row for row in session.scalars(select(RunCell).where(RunCell.run_id == lease.run_id))}
    queue = []
    for part, size in enumerate(sizes):
        row = have.get(part)
        if row is None:
            session.add(RunCell(run_id=lease.run_id, part=part, size=size, status=RunStatus.QUEUED, attempt=0))
        elif row.status == DONE:
            continue
        else:
            row.status, row.worker = RunStatus.QUEUED, None
        queue.append(part)
    session.flush()
    return queue


def claim(session: Session, run_id: int, part: int, worker: str) -> Lease | None:
    """The lease of a new attempt at a queued part of a fanned-out run; ``None`` for a late or duplicate message.
    A part claimed after a cancel was asked is cancelled instead (``None`` too)."""
    cancelled = bool(session.scalar(select(Run.cancel_requested).where(Run.id == run_id)))
    owned = (RunCell.run_id == run_id, RunCell.part == part, RunCell.status == RunStatus.QUEUED,
             RunCell.run_id.in_(_fanned(run_id)))
    if cancelled:
        _changed_one(session, update(RunCell).where(*owned).values(status=RunStatus.CANCELLED, worker=None))
        return None
    if not _changed_one(session, update(RunCell).where(*owned).values(
            status=RunStatus.RUNNING, worker=worker, attempt=RunCell.attempt + 1, heartbeat=utcnow())):
        return None
    attempt = session.scalar(select(RunCell.attempt).where(RunCell.run_id == run_id, RunCell.part == part))
    return None if attempt is None else Lease(run_id, worker, attempt)


def _held(lease: Lease, part: int) -> Any:
    return update(RunCell).where(RunCell.run_id == lease.run_id, RunCell.part == part,
                                 RunCell.status == RunStatus.RUNNING, RunCell.worker == lease.worker,
                                 RunCell.attempt == lease.attempt, RunCell.run_id.in_(_fanned(lease.run_id)))


def renew(session: Session, lease: Lease, part: int) -> bool:
    """Renew a part's lease (and the run's heartbeat, which says a worker is at it); False once it is lost
    (reaped, or its run concluded: failed, cancelled, deleted)."""
    now = utcnow()
    if not _changed_one(session, _held(lease, part).values(heartbeat=now)):
        return False
    session.execute(update(Run).where(Run.id == lease.run_id, Run.worker == FANNED_OUT).values(heartbeat=now))
    return True


def finish(session: Session, lease: Lease, part: int, status: str, rows: list[dict[str, Any]] | None = None) -> bool:
    """End a part (done with its rows, cancelled, failed) under its lease."""
    values: dict[str, Any] = {"status": status, "heartbeat": utcnow()}
    if rows is not None:
        values["rows"] = json.dumps(rows)
    return _changed_one(session, _held(lease, part).values(**values))


def release(session: Session, lease: Lease, part: int) -> bool:
    """Give a part back to the queue (its worker is stopping); the attempt is not counted."""
    return _changed_one(session, _held(lease, part).values(status=RunStatus.QUEUED, worker=None,
                                                           attempt=RunCell.attempt - 1))


def progress(session: Session, run_id: int) -> tuple[int, int, int, dict[str, int]]:
    """(cells in done parts, cells in all, parts, parts per status)."""
    rows = session.execute(select(RunCell.status, func.count(), func.sum(RunCell.size))
                           .where(RunCell.run_id == run_id).group_by(RunCell.status)).all()
    by_status = {status: int(count) for status, count, _ in rows}
    cells = {status: int(size or 0) for status, _, size in rows}
    return cells.get(DONE, 0), sum(cells.values()), sum(by_status.values()), by_status


def store_progress(session: Session, run_id: int) -> dict[str, int]:
    """The run's progress from its parts (cells of done parts); the parts per status."""
    done, total, parts, by_status = progress(session, run_id)
    note = f"{by_status.get(DONE, 0)} of {parts} parts done"
    session.execute(update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
                    .values(progress={"done": done, "total": total, "note": note}))
    return by_status


def take_conclusion(session: Session, run_id: int, worker: str) -> Lease | None:
    """Take the fanned-out run back for ``worker`` to conclude it (once: the first caller wins)."""
    if not _changed_one(session, update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING,
                                                   Run.worker == FANNED_OUT)
                        .values(worker=worker, heartbeat=utcnow())):
        return None
    attempt = session.scalar(select(Run.attempt).where(Run.id == run_id))
    return None if attempt is None else Lease(run_id, worker, attempt)


def rows(session: Session, run_id: int) -> list[dict[str, Any]]:
    """The rows of the done parts, in cell order."""
    texts = session.scalars(select(RunCell.rows).where(RunCell.run_id == run_id, RunCell.status == DONE)
                            .order_by(RunCell.part))
    return [row for text in texts if text for row in json.loads(text)]


def stale(session: Session, cutoff: Any) -> list[tuple[int, int, int, str]]:
    """``(run id, part, attempt, device)`` of running parts of fanned-out runs whose lease is older than
    ``cutoff``."""
    return [(r, p, a, d) for r, p, a, d in session.execute(
        select(RunCell.run_id, RunCell.part, RunCell.attempt, Run.device).join(Run, Run.id == RunCell.run_id)
        .where(RunCell.status == RunStatus.RUNNING, RunCell.heartbeat < cutoff, Run.status == RunStatus.RUNNING,
               Run.worker == FANNED_OUT)).all()]


def held_by(session: Session, worker: str) -> list[tuple[int, int, int, str]]:
    return [(r, p, a, d) for r, p, a, d in session.execute(
        select(RunCell.run_id, RunCell.part, RunCell.attempt, Run.device).join(Run, Run.id == RunCell.run_id)
        .where(RunCell.status == RunStatus.RUNNING, RunCell.worker == worker)).all()]


def requeue_lost(session: Session, run_id: int, part: int, attempt: int) -> bool:
    """Queue a part whose worker was lost again (that attempt only: a part re-queued meanwhile is left alone)."""
    return _changed_one(session, update(RunCell).where(
        RunCell.run_id == run_id, RunCell.part == part, RunCell.status == RunStatus.RUNNING,
        RunCell.attempt == attempt).values(status=RunStatus.QUEUED, worker=None))


def queued(session: Session, *, cuda: bool) -> list[tuple[int, int]]:
    """``(run id, part)`` of the queued parts of fanned-out runs of one queue."""
    device = Run.device == "cuda" if cuda else Run.device != "cuda"
    return [(r, p) for r, p in session.execute(
        select(RunCell.run_id, RunCell.part).join(Run, Run.id == RunCell.run_id)
        .where(RunCell.status == RunStatus.QUEUED, Run.status == RunStatus.RUNNING, Run.worker == FANNED_OUT, device)
        .order_by(RunCell.run_id, RunCell.part)).all()]


def reap(session: Session, *, cutoff: Any, retry_limit: int, space: str | None,
         alive: Callable[[int], bool] = process_alive) -> tuple[list[tuple[int, int, str]], list[tuple[int, str]]]:
    """The parts of :func:`backend.runs.lifecycle.reap`: a part whose lease is older than ``cutoff`` or whose
    worker of this process space is gone is queued again alone; past ``retry_limit`` its run fails. Returns
    ``(run, part, device)`` to enqueue once committed and ``(run, message)`` of the runs to fail."""
    lost = [(r, p, a, d, "its lease expired") for r, p, a, d in stale(session, cutoff)]
    for worker_id, pid, hostname in workers.in_space(session, space) if space else []:
        if pid != os.getpid() and not alive(pid):
            why = f"its process {pid} on {hostname} is gone"
            lost += [(r, p, a, d, why) for r, p, a, d in held_by(session, worker_id)]
    requeue: list[tuple[int, int, str]] = []
    failed: list[tuple[int, str]] = []
    for run_id, part, attempt, device, why in lost:
        if attempt <= retry_limit:
            if requeue_lost(session, run_id, part, attempt):
                log.warning("run %s part %s: worker lost during attempt %s (%s); re-queued", run_id, part, attempt, why)
                requeue.append((run_id, part, device))
        else:
            failed.append((run_id, f"part {part}: its worker was lost {attempt} times (ANODE_RETRY_LIMIT="
                                   f"{retry_limit}); last: {why}"))
    return requeue, failed


class PartHold(Hold):
    """A worker's hold on one part of a fanned-out run: :class:`Hold` with the part's lease. The cancel flag is
    the run's; metrics go into the run's."""

    def __init__(self, db: Database, lease: Lease, part: int, window: float) -> None:
        super().__init__(db, lease, window)
        self.part = part

    def heartbeat(self) -> bool:
        if self.lost.is_set():
            return False
        began = time.monotonic()
        with self.db.session(write=True) as session:
            held = renew(session, self.lease, self.part)
        if held:
            self.valid_until = max(self.valid_until, began + self.window)
        else:
            self.lost.set()
        return held

    def store_metrics(self, rows: Iterable[MetricRow]) -> int:
        began = time.monotonic()
        with self.db.session(write=True) as session:
            if not renew(session, self.lease, self.part):
                self.lost.set()
                raise LeaseLost(self.lease)
            count = upsert_metrics(session, self.lease.run_id, rows)
        self.valid_until = max(self.valid_until, began + self.window)
        return count

    def end(self, status: str, rows: list[dict[str, Any]] | None = None) -> dict[str, int] | None:
        """End the part; the run's parts per status afterwards, ``None`` (nothing written) once the lease is lost."""
        with self.db.session(write=True) as session:
            if not finish(session, self.lease, self.part, status, rows):
                self.lost.set()
                return None
            return store_progress(session, self.lease.run_id)

    def give_back(self) -> bool:
        with self.db.session(write=True) as session:
            return release(session, self.lease, self.part)
