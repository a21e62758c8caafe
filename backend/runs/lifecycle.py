"""A run's life in one place: claim, heartbeat, conclude, release, reap and cancel. The API
(:mod:`backend.runs.service`) and the worker (:mod:`backend.workers.process`) both call these rules; the SQL
stays in the repositories.

**Leases.** A claim gives the worker a :class:`Lease`: the run, the worker and the attempt. Every later write of
that attempt carries it. Writes to the store (heartbeat and progress, metrics, checkpoints, the outcome and
artifacts) are conditional on the lease inside their own unit of work, which keeps the run's row locked until it
commits: a worker whose run was reaped (a stalled process, a network partition) writes nothing into it, whether the run
is queued again, running elsewhere or finished. Files in the run's folder (the metrics journal, and the
checkpoints and artifacts the run's child writes after each "go") are written only while :meth:`Hold.confirm`
holds: for ``window`` seconds after the store last renewed the lease (half the lease, so hosts' clocks may
differ by that much), after that only once the store renews it again. A worker stopped for longer than that
(SIGSTOP, a paused VM) therefore learns on waking, before its first write, that its lease is gone; the worker
then ends the run's child without letting it save (:mod:`backend.workers.supervise`).

**Reaping.** A running run whose lease is older than ``ANODE_HEARTBEAT_TIMEOUT_SECONDS`` has lost its worker;
so has one whose worker was registered from this host (this boot, this pid namespace) with a process id that is
gone (killed, out of memory): that one is noticed at the next reaper pass, without waiting for the lease. Either
goes back to the queue, up to ``ANODE_RETRY_LIMIT`` times, then fails; the conditional updates make sure a run is
re-queued once.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from anode_lab.status import RunStatus
from backend.db import Database, after_commit, utcnow
from backend.models import CHECKPOINT, Run
from backend.runs import artifacts, repository as runs
from backend.runs.artifacts import LocalFile
from backend.runs.repository import MetricRow
from backend.workers import repository as workers

log = logging.getLogger("anode.lifecycle")


@dataclass(frozen=True)
class Lease:
    """What a worker's writes of one attempt carry: the run is running, held by ``worker``, in ``attempt``."""

    run_id: int
    worker: str
    attempt: int


class LeaseLost(RuntimeError):
    def __init__(self, lease: Lease) -> None:
        super().__init__(f"run {lease.run_id}: attempt {lease.attempt} on {lease.worker} lost its lease (the run "
                         "was reaped, finished or deleted meanwhile); nothing more is written under it")
        self.lease = lease


# ------------------------------------------------------------------------------------------------- API side
def cancel(session: Session, run_id: int) -> bool:
    """A queued run ends at once; a running one is flagged, and its worker ends it at its next step (an external
    run, which no worker holds, ends at once and its tracker's later writes are refused). False when the run is
    in none of these states any more (it ended meanwhile)."""
    run = runs.get(session, run_id)
    if run is not None and run.kind == EXTERNAL and run.worker is not None:
        return runs.finish(session, Lease(run_id, run.worker, run.attempt), status=RunStatus.CANCELLED,
                           message="cancelled; the tracking script's further points are refused")
    return runs.cancel_queued(session, run_id) or runs.request_cancel(session, run_id)


# ---------------------------------------------------------------------------------------------- worker side
def claim(session: Session, run_id: int, worker: str, device: str) -> Lease | None:
    """The lease of a new attempt when the run was queued; ``None`` for a duplicate or late queue message."""
    attempt = runs.claim(session, run_id, worker, device)
    return None if attempt is None else Lease(run_id, worker, attempt)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie, killed but not yet waited for, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:  # no /proc here: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def process_space() -> str | None:
    """Where this process's pid means something: this boot of this machine and its pid namespace (two containers
    of one host may share a host name, never a pid namespace); ``None`` where ``/proc`` cannot tell."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}/{namespace}"


def reap(session: Session, *, cutoff: datetime, retry_limit: int, space: str | None,
         alive: Callable[[int], bool] = process_alive) -> list[tuple[int, str]]:
    """Re-queue (or fail, past ``retry_limit``) every running run whose lease is older than ``cutoff`` or whose
    worker was registered from ``space`` (:func:`process_space`) with a process that is gone (its row is removed).
    Returns ``(run id, device)`` of the runs to enqueue once ``session`` commits."""
    lost: list[tuple[int, int, str, datetime | None, str | None, str]] = [
        (run_id, attempt, device, cutoff, None, "its lease expired")
        for run_id, attempt, device in runs.stale(session, cutoff, kind=None)]
    for worker_id, pid, hostname in workers.in_space(session, space) if space else []:
        if pid != os.getpid() and not alive(pid):
            lost += [(run_id, attempt, device, None, worker_id, f"its process {pid} on {hostname} is gone")
                     for run_id, attempt, device in runs.held_by(session, worker_id)]
            workers.remove(session, worker_id)
    requeue = []
    for run_id, attempt, device, stale_before, holder, why in lost:
        if attempt <= retry_limit:
            message = f"worker lost during attempt {attempt} ({why}); re-queued"
            if runs.requeue_lost(session, run_id, message, cutoff=stale_before, worker=holder):
                log.warning("run %s: %s", run_id, message)
                requeue.append((run_id, device))
        else:
            error = {"type": "WorkerLost", "traceback": [],
                     "message": f"its worker was lost {attempt} times (ANODE_RETRY_LIMIT={retry_limit}); last: {why}"}
            if runs.fail_lost(session, run_id, error, cutoff=stale_before, worker=holder):
                log.warning("run %s failed: %s", run_id, error["message"])
    for quiet, _, _ in runs.stale(session, cutoff, kind=EXTERNAL):  # a script that went quiet is not re-run
        error = {"type": "Lost", "traceback": [], "message": "the tracking script stopped sending (killed, or its "
                 "machine was lost); its points up to then are kept"}
        if runs.fail_lost(session, quiet, error, cutoff=cutoff):
            log.warning("external run %s failed: its tracking script stopped sending", quiet)
    return requeue


# ----------------------------------------------------------------------------------------- external runs
EXTERNAL = "external"
"""A run of a user's own training loop (``anode_lab.track``): no worker runs it; its tracker holds it the way a
worker holds a run, for one attempt, and the reaper fails it as lost (never re-queues it) when it goes quiet."""


def open_external(session: Session, run: Run, holder: str) -> Lease:
    """Hold a just-added external run for its tracker ``holder``."""
    now = utcnow()
    run.status, run.worker, run.attempt, run.started_at, run.heartbeat, run.updated_at = (
        RunStatus.RUNNING, holder, 1, now, now, now)
    session.flush()
    return Lease(run.id, holder, 1)


def progress_row(progress: tuple[int, int, str] | None) -> dict[str, Any] | None:
    if progress is None:
        return None
    done, total, note = progress
    return {"done": int(done), "total": int(total), "note": str(note)[:200]}


class Hold:
    """A worker's hold on the run it executes, shared by the worker's threads: every write of the attempt goes
    through here with the lease. Each write to the store is its own unit of work (the worker is the task
    boundary). ``window``: seconds a renewal lets the worker write files without asking the store again."""

    def __init__(self, db: Database, lease: Lease, window: float) -> None:
        self.db, self.lease, self.window = db, lease, window
        self.lost = threading.Event()
        self.valid_until = time.monotonic() + window  # claimed just now
        self.progress: tuple[int, int, str] | None = None
        self.cancelled = False
        self._cancel_read_at = -math.inf
        self._cancel_conn: Connection | None = None

    @property
    def run_id(self) -> int:
        return self.lease.run_id

    def heartbeat(self) -> bool:
        """Renew the lease, storing the run's progress; False (and :attr:`lost` set) once it is lost."""
        if self.lost.is_set():
            return False
        began = time.monotonic()
        with self.db.session(write=True) as session:
            held = runs.renew(session, self.lease, progress_row(self.progress))
        if held:
            self.valid_until = max(self.valid_until, began + self.window)
        else:
            self.lost.set()
        return held

    def confirm(self) -> None:
        """Call before writing a file of the run: raises :class:`LeaseLost` unless the lease is held, asking the
        store only when the last renewal is older than ``window`` (a worker that was stopped, a stuck heartbeat)."""
        if self.lost.is_set() or (time.monotonic() >= self.valid_until and not self.heartbeat()):
            raise LeaseLost(self.lease)

    def store_metrics(self, rows: Iterable[MetricRow]) -> int:
        """Upsert metric rows under the lease (one unit of work); :class:`LeaseLost` when it is gone."""
        began = time.monotonic()
        with self.db.session(write=True) as session:
            if not runs.renew(session, self.lease):
                self.lost.set()
                raise LeaseLost(self.lease)
            count = runs.upsert_metrics(session, self.lease.run_id, rows)
        self.valid_until = max(self.valid_until, began + self.window)  # committed: a renewal too
        return count

    def should_stop(self, poll_seconds: float) -> bool:
        """The cancel flag, read at most every ``poll_seconds`` (on an autocommit connection, so it sees new
        commits), after :meth:`confirm`: a lost lease raises rather than asking the run to stop, since a run
        asked to stop saves a checkpoint."""
        self.confirm()
        now = time.monotonic()
        if not self.cancelled and now - self._cancel_read_at >= poll_seconds:
            self._cancel_read_at = now
            if self._cancel_conn is None:
                self._cancel_conn = self.db.autocommit()
            self.cancelled = runs.cancel_requested(self._cancel_conn, self.lease.run_id)
        return self.cancelled

    def cancel_accepted(self) -> bool:
        """At the end: whether a cancel was requested (it wins over how the run ended, once accepted)."""
        if not self.cancelled and not self.lost.is_set():
            with contextlib.suppress(SQLAlchemyError), self.db.session() as session:
                self.cancelled = runs.cancel_requested(session, self.lease.run_id)
        return self.cancelled

    def keep_checkpoint(self, file: LocalFile) -> None:
        """Store ``file`` as the run's checkpoint in place of the one before, under the lease (one unit of work), so
        that a worker on any host resumes from it; :class:`LeaseLost` when the lease is gone. Call it once the
        metrics of every step before it are stored (:meth:`MetricWriter.store_all`): a checkpoint in the store
        never runs ahead of the store's metrics."""
        began = time.monotonic()
        with self.db.session(write=True) as session:
            if not runs.renew(session, self.lease):
                self.lost.set()
                raise LeaseLost(self.lease)
            artifacts.remove(session, self.lease.run_id, CHECKPOINT)
            artifacts.store(session, self.lease.run_id, file, CHECKPOINT)
        self.valid_until = max(self.valid_until, began + self.window)

    def conclude(self, *, status: str, files: Iterable[LocalFile] = (), summary: Mapping[str, Any] | None = None,
                 message: str = "", error: Mapping[str, Any] | None = None) -> bool:
        """Store how the run ended and its artifacts (``files``, copied into the store in place of its
        checkpoint), under the lease, in one unit of work; False (nothing written) once lost."""
        with self.db.session(write=True) as session:
            if not runs.finish(session, self.lease, status=status, summary=summary, message=message, error=error,
                               progress=progress_row(self.progress)):
                self.lost.set()
                return False
            artifacts.remove(session, self.lease.run_id)
            for file in files:
                artifacts.store(session, self.lease.run_id, file)
        return True

    def release(self, message: str, requeue: Callable[[], None]) -> bool:
        """Give the run back to the queue (the worker is stopping); ``requeue`` runs once that is committed."""
        with self.db.session(write=True) as session:
            released = runs.release(session, self.lease, message)
            if released:
                after_commit(session, requeue)
        return released

    def close(self) -> None:
        if self._cancel_conn is not None:
            self._cancel_conn.close()
            self._cancel_conn = None
