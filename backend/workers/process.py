"""A worker process: consumes one device class's queue and runs experiments; the only service module that
imports :mod:`anode_lab.experiments`.

The consumer loop is Huey's own ``dequeue`` / ``execute`` in the main thread, rather than Huey's ``Consumer``:
torch wants the main thread, shutdown must reach the running experiment between two steps (the ``Consumer``
owns the signals and runs tasks in worker threads), and a fixed poll interval (``ANODE_POLL_SECONDS``) keeps
enqueue-to-running latency under a second where the ``Consumer`` backs off to 10 s when idle.

Next to it (and the metrics writer thread of the running run) two threads keep the store honest:

* heartbeat: renews the worker's row and the lease of the run it holds (with its progress); a lease that
  cannot be renewed (the run was reaped or deleted) stops the run at its next step;
* reaper: re-queues runs whose lease went stale (their worker died), up to ``ANODE_RETRY_LIMIT`` re-queues,
  then fails them. Every worker reaps; the conditional updates make sure one run is re-queued once.

SIGINT/SIGTERM stop the worker after the current step: the run goes back to the queue (and resumes from its
checkpoint later). A second signal exits at once; the reaper re-queues the run then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError

from anode_lab.status import RunStatus
from backend.db import Database, after_commit, schema_is_current, utcnow
from backend.queue import RunQueues, queue_for_device
from backend.runs import repository as runs
from backend.runs.ingest import MetricWriter
from backend.runs.service import guess_media_type
from backend.settings import DeviceClass, Settings
from backend.workers import repository as workers

if TYPE_CHECKING:
    from anode_lab.experiments import RunContext

log = logging.getLogger("anode.worker")
TRACEBACK_FRAMES = 6
FORGET_WORKERS_AFTER = timedelta(days=1)
SCHEMA_WAIT_S = 300.0


@dataclass
class Lease:
    """The run a worker holds, as its threads see it."""

    run_id: int
    progress: tuple[int, int, str] | None = None
    lost: threading.Event = field(default_factory=threading.Event)
    cancelled: bool = False
    checked: float = float("-inf")
    poll: Connection | None = None
    """Autocommit connection of the training thread for cancel-flag reads."""


def progress_row(progress: tuple[int, int, str] | None) -> dict[str, Any] | None:
    if progress is None:
        return None
    done, total, note = progress
    return {"done": int(done), "total": int(total), "note": str(note)[:200]}


def error_summary(exc: BaseException) -> dict[str, Any]:
    frames = traceback.extract_tb(exc.__traceback__)[-TRACEBACK_FRAMES:]
    return {"type": type(exc).__name__, "message": str(exc),
            "traceback": [f"{Path(f.filename).name}:{f.lineno} in {f.name}: {f.line or ''}".strip() for f in frames]}


def prepare_torch(device: DeviceClass, threads: int | None) -> tuple[str, str, int | None]:
    """Set torch's thread count; return (device torch runs on, a readable name, its memory in bytes). A gpu
    worker without CUDA refuses to start; it uses the first visible GPU (one worker per GPU: give each its own
    ``CUDA_VISIBLE_DEVICES`` or device reservation)."""
    import torch

    if threads is not None:
        torch.set_num_threads(threads)
    if device == "gpu":
        if not torch.cuda.is_available():
            raise SystemExit("`anode-lab worker --device gpu` needs a CUDA device, and torch sees none")
        props = torch.cuda.get_device_properties(0)
        return "cuda", props.name, int(props.total_memory)
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return "cpu", f"cpu ({os.cpu_count()} cores)", int(pages * page_size) if pages > 0 else None


class WorkerProcess:
    def __init__(self, settings: Settings, device: DeviceClass) -> None:
        self.settings, self.device = settings, device
        self.id = f"{socket.gethostname()}:{os.getpid()}:{device}:{secrets.token_hex(3)}"
        self.stop = threading.Event()
        self.lease: Lease | None = None
        self.torch_device = "cuda" if device == "gpu" else "cpu"
        self.db: Database | None = None
        self.queues: RunQueues | None = None

    # -------------------------------------------------------------------------------------------- lifecycle
    def serve(self) -> int:
        self.torch_device, device_name, device_memory = prepare_torch(self.device, self.settings.torch_threads)
        self.db = Database(self.settings.db_url)
        self._wait_for_schema()
        self.queues = RunQueues(self.settings, body=self.execute)
        huey = self.queues.hueys[self.device]
        with self.db.session(write=True) as session:
            workers.forget_older_than(session, utcnow() - FORGET_WORKERS_AFTER)
            workers.register(session, worker_id=self.id, device=self.device, hostname=socket.gethostname(),
                             pid=os.getpid(), device_name=device_name, device_memory=device_memory)
        self._recover_queued()
        self._install_signals()
        threads = [threading.Thread(target=self._every, args=(self.settings.heartbeat_seconds, self._beat),
                                    name="heartbeat", daemon=True),
                   threading.Thread(target=self._every, args=(self.settings.reaper_seconds, self.reap),
                                    name="reaper", daemon=True)]
        for thread in threads:
            thread.start()
        log.info("worker %s consuming the %s queue (%s)", self.id, self.device, device_name)
        try:
            while not self.stop.is_set():
                try:
                    task = huey.dequeue()
                except Exception:
                    log.exception("reading the %s queue failed; trying again", self.device)
                    task = None
                if task is None:
                    self.stop.wait(self.settings.poll_seconds)
                    continue
                huey.execute(task)
        finally:
            self.stop.set()
            with self.db.session(write=True) as session:
                workers.remove(session, self.id)
            self.queues.close()
            self.db.dispose()
            log.info("worker %s stopped", self.id)
        return 0

    def _wait_for_schema(self) -> None:
        """Workers never migrate (several of them, on several hosts, would race): they wait until the API has
        brought the store to the newest revision at its start."""
        assert self.db is not None
        deadline = time.monotonic() + SCHEMA_WAIT_S
        said = False
        while True:
            try:
                if schema_is_current(self.db.engine):
                    return
                reason = ("the store's schema revision is not this worker's newest (the API has not started yet, "
                          "or runs another version)")
            except SQLAlchemyError as exc:
                reason = f"the store cannot be read ({type(exc).__name__})"
            if time.monotonic() > deadline:
                raise SystemExit(f"worker: {reason} after {SCHEMA_WAIT_S:.0f} s; start the API (`anode-lab api`), "
                                 "which migrates it, with the same ANODE_DATABASE_URL")
            if not said:
                log.info("waiting for the API to migrate the store: %s", reason)
                said = True
            time.sleep(1.0)

    def _install_signals(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            if self.stop.is_set():
                raise KeyboardInterrupt
            log.info("%s: finishing the current step, then stopping", signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGINT, handle)
        signal.signal(signal.SIGTERM, handle)

    def _every(self, seconds: float, job: Any) -> None:
        while not self.stop.wait(seconds):
            try:
                job()
            except Exception:
                log.exception("%s failed; trying again in %.1f s", job.__name__, seconds)

    def _recover_queued(self) -> None:
        """Queue again every stored queued run of this device class: a message lost with the queue (or never
        sent) is restored, and a duplicate is skipped by the claim."""
        assert self.db is not None and self.queues is not None
        with self.db.session() as session:
            ids = runs.queued_ids(session, cuda=self.device == "gpu")
        for run_id in ids:
            self.queues.enqueue(run_id, self.device)

    # ------------------------------------------------------------------------------------ lease and reaping
    def _beat(self) -> None:
        assert self.db is not None
        lease = self.lease
        with self.db.session(write=True) as session:
            workers.beat(session, self.id, lease.run_id if lease else None)
            if lease is not None and not runs.renew(session, lease.run_id, self.id, progress_row(lease.progress)):
                lease.lost.set()

    def reap(self) -> None:
        """Re-queue (or fail, past the retry limit) running runs whose lease is stale."""
        assert self.db is not None and self.queues is not None
        queues = self.queues
        cutoff = utcnow() - timedelta(seconds=self.settings.heartbeat_timeout_seconds)
        with self.db.session(write=True) as session:
            for run_id, attempt, device in runs.stale(session, cutoff):
                if attempt <= self.settings.retry_limit:
                    message = f"worker lost during attempt {attempt}; re-queued"
                    if runs.requeue_stale(session, run_id, cutoff, message):
                        log.warning("run %s: %s", run_id, message)
                        after_commit(session, partial(queues.enqueue, run_id, queue_for_device(device)))
                else:
                    error = {"type": "WorkerLost", "traceback": [],
                             "message": f"its worker was lost {attempt} times (ANODE_RETRY_LIMIT="
                                        f"{self.settings.retry_limit})"}
                    if runs.fail_stale(session, run_id, cutoff, error):
                        log.warning("run %s failed: %s", run_id, error["message"])

    # --------------------------------------------------------------------------------------------- running
    def execute(self, run_id: int) -> None:
        """Body of ``runs.execute``: claim the run, run it, finish its row. A run that is not queued any more
        (finished, cancelled, deleted, or claimed by a duplicate message) is skipped."""
        assert self.db is not None
        with self.db.session(write=True) as session:
            if not runs.claim(session, run_id, self.id, self.torch_device):
                log.info("run %s is not queued any more; skipped", run_id)
                return
        self.lease = Lease(run_id)
        try:
            self._run(self.lease)
        finally:
            if self.lease.poll is not None:
                self.lease.poll.close()
            self.lease = None

    def _should_stop(self, lease: Lease) -> bool:
        """``RunContext.should_stop``: shutdown, a lost lease, or the cancel flag (read at most every
        ``cancel_poll_seconds``, and at most once per step)."""
        if self.stop.is_set() or lease.lost.is_set():
            return True
        now = time.monotonic()
        if not lease.cancelled and now - lease.checked >= self.settings.cancel_poll_seconds:
            lease.checked = now
            if lease.poll is None:
                assert self.db is not None
                lease.poll = self.db.autocommit()
            lease.cancelled = runs.cancel_requested(lease.poll, lease.run_id)
        return lease.cancelled

    def context(self, lease: Lease, writer: MetricWriter, workdir: Path) -> RunContext:
        """The :class:`RunContext` a run gets: metrics to ``writer``, progress to the lease (the heartbeat
        stores it), ``should_stop`` from shutdown, lease and cancel flag."""
        from anode_lab.experiments import RunContext

        def progress(done: int, total: int, note: str) -> None:
            lease.progress = (done, total, note)  # the heartbeat thread shapes and stores it

        return RunContext(workdir, on_metrics=writer.add, on_progress=progress,
                          should_stop=lambda: self._should_stop(lease))

    def _run(self, lease: Lease) -> None:
        from anode_lab.experiments import run_experiment
        from anode_lab.specs import parse_spec

        assert self.db is not None
        with self.db.session() as session:
            run = runs.get(session, lease.run_id)
            assert run is not None
            kind, spec_data, attempt = run.kind, run.spec, run.attempt
        workdir = self.settings.run_dir(lease.run_id)
        writer = MetricWriter(self.db, lease.run_id, workdir, self.settings.metrics_flush_seconds)
        replayed = writer.replay()
        writer.start()
        log.info("run %s (%s) attempt %s started%s", lease.run_id, kind, attempt,
                 f"; {replayed} journaled metric rows restored" if replayed else "")

        ctx = self.context(lease, writer, workdir)
        try:
            spec = parse_spec(kind, spec_data)
            if getattr(spec, "device", None) == "auto":
                spec = spec.model_copy(update={"device": self.torch_device})
            result = run_experiment(kind, spec, ctx)
            writer.close()
        except Exception as exc:
            with contextlib.suppress(Exception):
                writer.close()
            log.exception("run %s failed", lease.run_id)
            self._finish(lease, status=RunStatus.FAILED, message=f"{type(exc).__name__}: {exc}",
                         error=error_summary(exc))
            return
        if result.status == RunStatus.CANCELLED and not lease.cancelled:
            if lease.lost.is_set():
                log.warning("run %s: lease lost (reaped); another worker owns it now", lease.run_id)
                return
            self._release(lease)
            return
        self._finish(lease, status=result.status, summary=dict(result.summary), message=result.message)

    def _finish(self, lease: Lease, **outcome: Any) -> None:
        assert self.db is not None
        files = self._artifact_files(lease.run_id)
        with self.db.session(write=True) as session:
            if runs.finish(session, lease.run_id, self.id, progress=progress_row(lease.progress), **outcome):
                runs.replace_artifacts(session, lease.run_id, files)
                log.info("run %s %s", lease.run_id, outcome["status"])
            else:
                log.warning("run %s: no longer held by this worker; its outcome is dropped", lease.run_id)

    def _release(self, lease: Lease) -> None:
        """Shutting down mid-run: back to the queue, to resume from its checkpoint."""
        assert self.db is not None and self.queues is not None
        queues, device = self.queues, self.device
        with self.db.session(write=True) as session:
            if runs.release(session, lease.run_id, self.id, "worker stopped; re-queued to resume"):
                after_commit(session, lambda: queues.enqueue(lease.run_id, device))
                log.info("run %s re-queued (worker stopping)", lease.run_id)

    def _artifact_files(self, run_id: int) -> list[tuple[str, int, str]]:
        folder = self.settings.run_dir(run_id) / "artifacts"
        if not folder.is_dir():
            return []
        return [(path.name, path.stat().st_size, guess_media_type(path.name))
                for path in sorted(folder.iterdir()) if path.is_file()]


def run_worker(settings: Settings | None = None, device: DeviceClass = "cpu") -> int:
    """``anode-lab worker``: consume ``device``'s queue until SIGINT/SIGTERM."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its schema checks say "Context impl …" each time
    return WorkerProcess(settings or Settings(), device).serve()
