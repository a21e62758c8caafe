"""A worker process: consumes one device class's queue and runs experiments; the only service module that
imports :mod:`anode_lab.experiments`.

The consumer loop is Huey's own ``dequeue`` / ``execute`` in the main thread, rather than Huey's ``Consumer``:
torch wants the main thread, shutdown must reach the running experiment between two steps (the ``Consumer``
owns the signals and runs tasks in worker threads), and a fixed poll interval (``ANODE_POLL_SECONDS``) keeps
enqueue-to-running latency under a second where the ``Consumer`` backs off to 10 s when idle.

Each run runs in a child process with memory and wall-time limits (:mod:`backend.workers.supervise` and
:mod:`backend.workers.child`); the worker stores what it reports. Its spec is checked again against this worker's
cost limits and data folders first, and its folder must be the run's real folder (no symlink in the way).

A run's folder under this worker's ``ANODE_DATA_DIR`` is a working copy, never read by another host: the checkpoint
the run saves last and, at its end, its artifacts are kept in the store (:mod:`backend.runs.artifacts`); a run
starts from the checkpoint in the store, whoever kept it, and its folder is removed once the run ended.

At start, a thread trains two tiny steps in a run's child process (:func:`~backend.workers.child.check_install`);
when that fails, the worker's row says why and ``/health`` is degraded.

The rules of a run's life (claim, heartbeat, conclude, release, reap, cancel, and the lease every write carries)
are :mod:`backend.runs.lifecycle`'s; the worker runs them from two threads next to its loop (and the metrics writer
thread of the running run):

* heartbeat: renews the worker's row and the lease of the run it holds (with its progress); a lease that
  cannot be renewed (the run was reaped or deleted) stops the run, and its child is ended without saving;
* reaper: re-queues runs whose lease went stale or whose worker on this host is gone (every worker reaps).

SIGINT/SIGTERM stop the worker after the current step: the run goes back to the queue (and resumes from its
checkpoint later). A second signal exits at once; the reaper re-queues the run then.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from anode_lab.status import RunStatus
from backend.db import Database, after_commit, schema_is_current, utcnow
from backend.queue import RunQueues, queue_for_device
from backend.runs import artifacts, cells, lifecycle, repository as runs
from backend.runs.artifacts import LocalFile
from backend.runs.ingest import MetricWriter
from backend.runs.lifecycle import Hold, LeaseLost
from backend.runs.service import guess_media_type
from backend.runs.tasks import InvalidMessage
from backend.settings import DeviceClass, Settings
from backend.workers import fanout, repository as workers
from backend.workers.child import (
    check_install,
    error_summary,
    is_disk_full,
    run_child,
    start_forkserver,
)
from backend.workers.supervise import Ended, Supervisor

log = logging.getLogger("anode.worker")
FORGET_WORKERS_AFTER = timedelta(days=1)
SCHEMA_WAIT_S = 300.0


def describe_device(device: DeviceClass) -> tuple[str, str, int | None]:
    """(device torch runs on, a readable name, its memory in bytes). Only a gpu worker imports torch here (to
    name its GPU; it refuses to start without CUDA and uses the first visible GPU: one worker per GPU, each with
    its own ``CUDA_VISIBLE_DEVICES`` or device reservation); the runs themselves import it in their child."""
    if device == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("`anode-lab worker --device gpu` needs a CUDA device, and torch sees none")
        props = torch.cuda.get_device_properties(0)
        return "cuda", props.name, int(props.total_memory)
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return "cpu", f"cpu ({os.cpu_count()} cores)", int(pages * page_size) if pages > 0 else None


def confine(folder: Path, real: Path) -> None:
    """Refuse a run folder (or its ``artifacts``) that is not the run's real folder: a symlink put in its place
    would make the run write, and the API serve, files elsewhere."""
    for path, expected in ((folder, real), (folder / "artifacts", real / "artifacts")):
        if path.is_symlink() or (path.exists() and path.resolve() != expected):
            raise PermissionError(f"{path} is a symlink or leads out of the run's folder {expected}; remove it "
                                  "(runs write only into their real folder)")


class WorkerProcess:
    """A worker of one device class; the store and the queues are opened here, the consumer loop in
    :meth:`serve`. ``child_target`` is what the run's child process runs (tests put a stand-in there)."""

    child_target: Callable[..., None] = staticmethod(run_child)

    def __init__(self, settings: Settings, device: DeviceClass) -> None:
        self.settings, self.device = settings, device
        self.id = f"{socket.gethostname()}:{os.getpid()}:{device}:{secrets.token_hex(3)}"
        self.space = lifecycle.process_space()
        self.stop = threading.Event()
        self.hold: Hold | None = None
        self.torch_device = "cuda" if device == "gpu" else "cpu"
        self.db = Database(settings.db_url)
        self.queues = RunQueues(settings, body=self.execute)

    def close(self) -> None:
        self.queues.close()
        self.db.dispose()

    # -------------------------------------------------------------------------------------------- lifecycle
    def serve(self) -> int:
        start_forkserver()  # imports torch for the runs' child processes while this one starts up
        self.torch_device, device_name, device_memory = describe_device(self.device)
        self._wait_for_schema()
        huey = self.queues.hueys[self.device]
        with self.db.session(write=True) as session:
            workers.forget_older_than(session, utcnow() - FORGET_WORKERS_AFTER)
            workers.register(session, worker_id=self.id, device=self.device, hostname=socket.gethostname(),
                             pid=os.getpid(), device_name=device_name, device_memory=device_memory,
                             process_space=self.space)
        self.forget_ended_folders()
        try:  # at once: a run of a worker of this host that died (this one's predecessor, say) moves again now
            self.reap()
        except Exception:
            log.exception("reaping at start failed; the reaper tries again in %.1f s", self.settings.reaper_seconds)
        self._recover_queued()
        self._install_signals()
        threads = [threading.Thread(target=self._every, args=(self.settings.heartbeat_seconds, self._beat),
                                    name="heartbeat", daemon=True),
                   threading.Thread(target=self._every, args=(self.settings.reaper_seconds, self.reap),
                                    name="reaper", daemon=True),
                   threading.Thread(target=self.check_install, name="install-check", daemon=True)]
        for thread in threads:
            thread.start()
        log.info("worker %s consuming the %s queue (%s)", self.id, self.device, device_name)
        try:
            while not self.stop.is_set():
                try:
                    task = huey.dequeue()
                except InvalidMessage as exc:  # taken off the queue by now: dropped
                    log.warning("dropped a %s queue message that is not a run id: %s", self.device, exc)
                    continue
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
            self.close()
            log.info("worker %s stopped", self.id)
        return 0

    def _wait_for_schema(self) -> None:
        """Workers never migrate (several of them, on several hosts, would race): they wait until the API has
        brought the store to the newest revision at its start."""
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

    def check_install(self) -> None:
        """Train two tiny steps in a run's child process, as runs do; if that fails, store why on this worker's row
        (``/health`` is then degraded and names it) and log it. Runs are still taken: each fails with its child's
        own error."""
        problem = check_install(self.child_target, self.torch_device, self.settings.max_run_bytes)
        if problem is None:
            return
        problem = (f"this worker cannot run experiments: {problem}. Repair the install this worker runs in (torch "
                   "and torchvision must be built for each other) and restart it")
        log.error("%s", problem)
        with self.db.session(write=True) as session:
            workers.report_problem(session, self.id, problem)

    def _every(self, seconds: float, job: Any) -> None:
        while not self.stop.wait(seconds):
            try:
                job()
            except Exception:
                log.exception("%s failed; trying again in %.1f s", job.__name__, seconds)

    def _recover_queued(self) -> None:
        """Queue again every stored queued run of this device class: a message lost with the queue (or never
        sent) is restored, and a duplicate is skipped by the claim."""
        with self.db.session() as session:
            ids = runs.queued_ids(session, cuda=self.device == "gpu")
            parts = cells.queued(session, cuda=self.device == "gpu")
        for run_id in ids:
            self.queues.enqueue(run_id, self.device)
        for run_id, part in parts:
            self.queues.enqueue(run_id, self.device, part)

    # ------------------------------------------------------------------------------------ lease and reaping
    def _beat(self) -> None:
        hold = self.hold
        with self.db.session(write=True) as session:
            workers.beat(session, self.id, hold.run_id if hold else None)
        if hold is not None:
            hold.heartbeat()

    def reap(self) -> None:
        """Re-queue (or fail, past the retry limit) running runs whose worker is lost (:func:`lifecycle.reap`)."""
        queues = self.queues
        cutoff = utcnow() - timedelta(seconds=self.settings.heartbeat_timeout_seconds)
        failed: list[tuple[int, str]] = []
        with self.db.session(write=True) as session:
            requeue, failed = cells.reap(session, cutoff=cutoff, retry_limit=self.settings.retry_limit,
                                         space=self.space)
            for run_id, part, device in requeue:
                after_commit(session, partial(queues.enqueue, run_id, queue_for_device(device), part))
            for run_id, device in lifecycle.reap(session, cutoff=cutoff, retry_limit=self.settings.retry_limit,
                                                 space=self.space):
                after_commit(session, partial(queues.enqueue, run_id, queue_for_device(device)))
        for run_id, message in failed:
            fanout.settle(self, run_id, {"type": "WorkerLost", "message": message, "traceback": []})

    # --------------------------------------------------------------------------------------------- running
    def execute(self, run_id: int, cell: int | None = None) -> None:
        """Body of ``runs.execute``: claim the run, run it, finish its row. A run that is not queued any more
        (finished, cancelled, deleted, or claimed by a duplicate message) is skipped. With ``cell``: that part
        of a fanned-out sweep (:func:`backend.workers.fanout.execute_part`)."""
        if cell is not None:
            fanout.execute_part(self, run_id, cell)
            return
        with self.db.session(write=True) as session:
            lease = lifecycle.claim(session, run_id, self.id, self.torch_device)
        if lease is None:
            log.info("run %s is not queued any more; skipped", run_id)
            return
        self.hold = Hold(self.db, lease, window=self.settings.heartbeat_timeout_seconds / 2)
        try:
            self._run(self.hold)
        finally:
            self.hold.close()
            self.hold = None

    def should_stop(self, hold: Hold) -> bool:
        """Shutdown or the cancel flag (read at most every ``cancel_poll_seconds``); :class:`LeaseLost` when the
        lease is gone."""
        return hold.should_stop(self.settings.cancel_poll_seconds) or self.stop.is_set()

    def admitted_spec(self, kind: str, spec_data: dict[str, Any]) -> dict[str, Any]:
        """The stored spec checked again here (this worker's cost limits and data folders), with ``device: auto``
        made this worker's device and ``threads`` at most ``ANODE_TORCH_THREADS``, else at most the cores this
        worker may use (256 threads on 2 cores only wait on each other)."""
        from anode_lab.specs import parse_spec
        from anode_lab.specs.cost import admit

        spec = admit(kind, parse_spec(kind, spec_data), self.settings.run_limits)
        update: dict[str, Any] = {}
        if getattr(spec, "device", None) == "auto":
            update["device"] = self.torch_device
        cap, threads = self.settings.torch_threads, getattr(spec, "threads", None)
        if cap is not None and hasattr(spec, "threads") and (threads is None or threads > cap):
            update["threads"] = cap
        elif cap is None and threads is not None and threads > len(os.sched_getaffinity(0)):
            update["threads"] = len(os.sched_getaffinity(0))
        return spec.model_copy(update=update).model_dump(mode="json")

    def _run(self, hold: Hold) -> None:
        with self.db.session() as session:
            run = runs.get(session, hold.run_id)
            assert run is not None
            kind, spec_data = run.kind, run.spec
        workdir = self.settings.run_dir(hold.run_id)
        try:
            spec = self.admitted_spec(kind, spec_data)
            confine(workdir, self.settings.runs_dir.resolve() / str(hold.run_id))
            plan = fanout.sweep_parts(self, kind, spec)
            if plan is not None:
                fanout.fan_out(self, hold, plan)
                return
            resumed = self._restore_checkpoint(hold, workdir)
            writer = MetricWriter(hold, workdir, self.settings.metrics_flush_seconds)
        except Exception as exc:  # noqa: BLE001 - whatever refuses the run is its failure message
            log.warning("run %s refused: %s", hold.run_id, exc)
            self._finish(hold, status=RunStatus.FAILED, message=f"{type(exc).__name__}: {exc}",
                         error=error_summary(exc))
            return
        try:
            replayed = writer.replay()
        except LeaseLost as exc:
            log.warning("%s", exc)
            return
        writer.start()
        log.info("run %s (%s) attempt %s started%s%s", hold.run_id, kind, hold.lease.attempt,
                 f"; {replayed} journaled metric rows restored" if replayed else "",
                 f"; resumes from the stored {resumed}" if resumed else "")
        try:
            ended = Supervisor(self, hold, writer).run(kind, spec, workdir)
            writer.close()
        except Exception as exc:  # noqa: BLE001 - the run fails with it; the worker goes on
            with contextlib.suppress(Exception):
                writer.close()
            ended = Ended("error", reason="disk" if is_disk_full(exc) else "error", error=error_summary(exc))
        self._conclude(hold, ended)

    def _conclude(self, hold: Hold, ended: Ended) -> None:
        """Store how the run ended: a lost lease writes nothing; cancel wins once accepted; a shutdown re-queues."""
        if hold.lost.is_set():
            log.warning("run %s: lease lost (reaped); attempt %s ends here, writing nothing", hold.run_id,
                        hold.lease.attempt)
        elif ended.kind != "lost" and hold.cancel_accepted():
            with self.db.session() as session:
                last = runs.last_step(session, hold.run_id)
            message = f"cancelled after step {last}" if last is not None else "cancelled before its first step"
            self._finish(hold, status=RunStatus.CANCELLED, summary=ended.summary, message=message)
        elif ended.kind == "done" and ended.status != RunStatus.CANCELLED:
            self._finish(hold, status=ended.status, summary=ended.summary, message=ended.message)
        elif ended.kind in ("done", "stopped"):
            queues, device, run_id = self.queues, self.device, hold.run_id
            if hold.release("worker stopped; re-queued to resume", lambda: queues.enqueue(run_id, device)):
                log.info("run %s re-queued (worker stopping)", run_id)
        else:
            message = ended.describe(self.settings)
            error = ended.error or {"type": "TimeLimit" if ended.kind == "time" else "RunProcessDied",
                                    "message": message, "traceback": []}
            log.warning("run %s failed: %s", hold.run_id, message)
            self._finish(hold, status=RunStatus.FAILED, message=message, error=error)

    def _restore_checkpoint(self, hold: Hold, workdir: Path) -> str | None:
        """Make the run's local checkpoints the store's: the one a worker of any host kept last (its name is
        returned), or none. The store's is the run's truth: a newer local file was never kept (its worker died
        before storing the metrics before it) and is removed."""
        folder = workdir / "checkpoints"
        with self.db.session() as session:
            row = artifacts.checkpoint(session, hold.run_id)
            hold.confirm()
            for old in folder.iterdir() if folder.is_dir() else ():
                if old.is_file() and not old.is_symlink():
                    old.unlink()
            if row is None:
                return None
            target = workdir / row.name
            if target.parent.resolve() != folder.resolve():
                raise ValueError(f"run {hold.run_id}'s stored checkpoint {row.name!r} is not in its checkpoints folder")
            artifacts.copy_out(session, row, target)
            return row.name

    def _finish(self, hold: Hold, **outcome: Any) -> None:
        files, left_out = self._artifact_files(hold.run_id)
        if left_out:
            outcome["message"] = (f"{outcome.get('message') or ''} (artifacts not kept, over ANODE_MAX_RUN_DISK_BYTES="
                                  f"{self.settings.max_run_disk_bytes}: {', '.join(left_out)})").strip()
        if hold.conclude(files=files, **outcome):
            log.info("run %s %s", hold.run_id, outcome["status"])
            # its files are in the store now: the folder was this host's working copy
            shutil.rmtree(self.settings.run_dir(hold.run_id), ignore_errors=True)
        else:
            log.warning("run %s: no longer held by this worker; its outcome is dropped", hold.run_id)

    def _artifact_files(self, run_id: int) -> tuple[list[LocalFile], list[str]]:
        """The run's artifacts: plain files in its real ``artifacts`` folder (symlinks are not kept), as many as
        fit in ``ANODE_MAX_RUN_DISK_BYTES`` in name order, and the names of those left out."""
        folder = self.settings.run_dir(run_id) / "artifacts"
        try:
            confine(folder.parent, self.settings.runs_dir.resolve() / str(run_id))
        except PermissionError as exc:
            log.warning("run %s: artifacts not kept: %s", run_id, exc)
            return [], []
        if not folder.is_dir():
            return [], []
        files, left_out, room = [], [], self.settings.max_run_disk_bytes
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.is_symlink():
                continue
            size = path.stat().st_size
            if size > room:
                left_out.append(path.name)
                continue
            room -= size
            files.append(LocalFile(path.name, path, guess_media_type(path.name)))
        return files, left_out

    def forget_ended_folders(self) -> None:
        """Remove this host's working folders of runs that ended or were deleted (their files are in the store): a
        run that moved to another worker, or a part of a sweep another worker concluded, leaves one behind."""
        folder = self.settings.runs_dir
        ids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()] if folder.is_dir() else []
        if not ids:
            return
        with self.db.session() as session:
            live = runs.unfinished_among(session, ids)
        for run_id in set(ids) - live:
            shutil.rmtree(folder / str(run_id), ignore_errors=True)


def yield_cpu(nice: int) -> None:
    """Lower this process's CPU priority by ``nice`` before it starts threads or children (they inherit it): training
    is batch work, and on a shared host the API's requests should not queue behind it. Where the kernel groups
    processes by session (Linux autogroups), a nice value only counts within the session, so a worker that leads its
    session (``anode-lab up`` starts each part in its own) gives the session's group the same value; one started
    from a terminal leaves the terminal's group alone. Under the API's load on PostgreSQL (``bench/service.py``) on
    2 cores, nice 10 read p99 39.9, 39.2, 36.7 and 34.8 ms against 51.3, 43.2, 38.7 and 42.3 ms at 0 (interleaved),
    with the run training as fast."""
    if nice <= 0:
        return
    os.nice(nice)
    if os.getsid(0) == os.getpid():
        with contextlib.suppress(OSError):  # no autogroups (or not Linux): the process's own nice is what counts
            Path("/proc/self/autogroup").write_text(str(nice))


def run_worker(settings: Settings | None = None, device: DeviceClass = "cpu") -> int:
    """``anode-lab worker``: consume ``device``'s queue until SIGINT/SIGTERM, at the priority of
    :func:`yield_cpu`."""
    settings = settings or Settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # its schema checks say "Context impl …" each time
    yield_cpu(settings.worker_nice)
    return WorkerProcess(settings, device).serve()
