"""The worker's side of a run's child process (:mod:`backend.workers.child`): start it, store what it reports,
answer its "stop?", and end it when it overstays.

* Reports come in batches (:mod:`backend.workers.uplink`): a batch's metrics go to the run's
  :class:`~backend.runs.ingest.MetricWriter` at once (one journal write, stored in batches) and progress to the
  lease, which the heartbeat stores; a store or journal that fails ends the child and the run.
* A checkpoint the child saved is kept in the store, after the metrics before it (a worker of another host
  resumes from it: hosts share no disk).
* The worker reads its ``should_stop`` (shutdown, the cancel flag; a lost lease raises) between batches and tells
  the child "stop" at once, else renews its "go" (a permit of :data:`~backend.workers.uplink.PERMIT_SECONDS`,
  never past the lease's window) halfway through. Before a checkpoint, or when its permit ran out, the child asks
  "stop?"; the answer comes after every earlier report is stored. A lost lease gets no answer: the child is
  killed at once, so it saves no checkpoint into a run another worker holds (or has finished), and nothing it
  reports is written. After a cancel the child gets :data:`STOP_GRACE_S`, then it is killed: a run whose step is
  long (a sweep cell, a demo's solve) still stops within about one step. A shutdown waits, so training can
  checkpoint.
* ``ANODE_MAX_RUN_SECONDS`` after the start, the child is killed and the run fails with "time limit".
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from anode_lab.specs.cost import readable_size
from backend.runs.artifacts import LocalFile
from backend.runs.ingest import MetricWriter
from backend.runs.lifecycle import Hold, LeaseLost
from backend.settings import Settings
from backend.workers.child import context, error_summary, is_disk_full
from backend.workers.uplink import PERMIT_SECONDS

if TYPE_CHECKING:
    from backend.workers.process import WorkerProcess

log = logging.getLogger("anode.worker")
STOP_GRACE_S = 3.0
"""How long a child may take to stop by itself after a cancel before it is killed."""
POLL_S = 0.05
KILL_WAIT_S = 5.0


@dataclass
class Ended:
    """How a child ended, as the worker stores it."""

    kind: Literal["done", "error", "time", "stopped", "died", "lost"]
    status: str = ""
    summary: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    reason: str = ""
    """For ``error``: ``memory``, ``disk`` or ``error``."""
    error: dict[str, Any] | None = None
    seconds: float = 0.0
    exitcode: int | None = None

    def describe(self, settings: Settings) -> str:
        """The run's failure message: what happened and what to change."""
        limit = readable_size(settings.max_run_bytes)
        if self.kind == "time":
            return (f"time limit: stopped after {self.seconds:.0f} s (ANODE_MAX_RUN_SECONDS="
                    f"{settings.max_run_seconds:g}); lower the run's steps or epochs, or ask the operator")
        if self.kind == "died":
            code = self.exitcode or 0
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            if code == -signal.SIGKILL:
                return (f"out of memory (limit {limit}, ANODE_MAX_RUN_BYTES)? the run's process was killed ({how}), "
                        "as the kernel does when memory runs out")
            return f"the run's process ended without a result ({how})"
        error = self.error or {}
        text = f"{error.get('type', 'Error')}: {error.get('message', '')}"
        if self.reason == "memory":
            return (f"out of memory (limit {limit} per run, ANODE_MAX_RUN_BYTES): {text}; lower the batch, the "
                    "model's size or N_t")
        if self.reason == "disk":
            return f"disk full: {text}; free space under the data folder and run it again"
        return text


class Supervisor:
    """One child process for one run of ``worker``."""

    def __init__(self, worker: WorkerProcess, hold: Hold, writer: MetricWriter) -> None:
        self.worker, self.hold, self.writer = worker, hold, writer
        self.settings = worker.settings
        self._permit_until = -math.inf

    def run(self, kind: str, spec: dict[str, Any], workdir: Path, part: int | None = None) -> Ended:
        self.workdir = workdir
        ctx = context()
        receiver, sender = ctx.Pipe()
        threads = spec.get("threads")
        child = ctx.Process(target=self.worker.child_target, name=f"run-{self.hold.run_id}", daemon=True,
                            args=(kind, spec, str(workdir), self.settings.max_run_bytes, threads, sender,
                                  *(() if part is None else (part,))))
        child.start()
        sender.close()
        try:
            return self.serve(receiver, child)
        finally:
            _end(child)
            receiver.close()

    def serve(self, receiver: Connection, child: Any) -> Ended:
        """Store what ``child`` (a process: ``is_alive()``, ``exitcode``) sends on ``receiver`` and answer its
        questions, until it ends, overstays or must be ended; the caller ends the process."""
        started = time.monotonic()
        stop_asked: float | None = None
        ended: Ended | None = None
        try:
            while True:
                now = time.monotonic()
                if stop_asked is None and self.worker.should_stop(self.hold):  # a lost lease raises here
                    stop_asked = now
                    self._tell(receiver, "stop", asked=False)
                elif stop_asked is None and self._permit_until - now < PERMIT_SECONDS / 2:
                    self._tell(receiver, "go", asked=False)
                message = None
                if receiver.poll(POLL_S):
                    try:
                        message = receiver.recv()
                    except EOFError:
                        break
                now = time.monotonic()
                if message is not None:
                    ended = self._handle_batch(receiver, message[1], stop_asked is not None)
                    if ended is not None:  # its last word: no need to wait for the process to wind down
                        break
                hurried = self.hold.cancelled
                if stop_asked is not None and hurried and now - stop_asked > STOP_GRACE_S:
                    ended = Ended("stopped")
                    break
                if now - started > self.settings.max_run_seconds:
                    ended = Ended("time", seconds=now - started)
                    break
                if not child.is_alive() and not receiver.poll(0):
                    break
        except LeaseLost:
            ended = Ended("lost")
        except Exception as exc:  # noqa: BLE001 - storing a report failed (a full journal disk, a store error)
            reason = "disk" if is_disk_full(exc) else "error"
            ended = Ended("error", reason=reason, error=error_summary(exc))
        if ended is None:  # gone without a result: while the worker shuts down, a stop (the run resumes later)
            stopping = stop_asked is not None or self.worker.stop.is_set()
            return Ended("stopped") if stopping else Ended("died", exitcode=child.exitcode)
        return ended

    def _handle_batch(self, receiver: Connection, batch: list[tuple[Any, ...]], stopping: bool) -> Ended | None:
        """Store a batch of reports in one go (journal, then the writer's buffer); answer a question in it once
        everything before it is stored."""
        metrics: list[tuple[int, Mapping[str, float]]] = []
        for message in batch:
            what = message[0]
            if what == "metrics":
                metrics.append((message[1], message[2]))
                continue
            if what == "progress":  # for the heartbeat: no need to store the metrics before it
                self.hold.progress = (message[1], message[2], message[3])
                continue
            self.writer.add_many(metrics)
            metrics = []
            if what == "checkpoint":
                self._keep_checkpoint(str(message[1]))
            elif what == "ask":  # between two steps, or before a checkpoint: go on until when?
                stopping = stopping or self.worker.should_stop(self.hold)
                self._tell(receiver, "stop" if stopping else "go", asked=True)
            elif what == "done":
                return Ended("done", status=message[1], summary=message[2], message=message[3])
            elif what == "error":
                return Ended("error", reason=message[1], error=message[2])
        self.writer.add_many(metrics)
        return None

    def _tell(self, receiver: Connection, answer: str, *, asked: bool) -> None:
        """Send the child "go" or "stop" with a permit until at most :data:`PERMIT_SECONDS` from now, never past
        the lease's window (the lease was just confirmed)."""
        self._permit_until = min(time.monotonic() + PERMIT_SECONDS, self.hold.valid_until)
        with contextlib.suppress(OSError):  # a child killed meanwhile cannot read it
            receiver.send((answer, self._permit_until, asked))

    def _keep_checkpoint(self, name: str) -> None:
        """Keep the checkpoint the child just saved in the store, after every metric reported before it, so that a
        worker on another host resumes from it. The child's next checkpoint waits for the answer to its "stop?", which
        comes after this, so the file is not replaced while it is read; but a child that ends (its run done) may
        remove its checkpoints before this report is read: a checkpoint gone is superseded, and is skipped."""
        path = self.workdir / name
        if not path.resolve().is_relative_to(self.workdir.resolve()):
            raise ValueError(f"the run reported a checkpoint {name!r} that is not a file in its folder")
        try:
            size, limit = path.stat().st_size, self.settings.max_run_disk_bytes
            if size > limit:
                log.warning("run %s: checkpoint %s (%s) not kept in the store: over ANODE_MAX_RUN_DISK_BYTES (%s); "
                            "the run resumes from an earlier one", self.hold.run_id, name, readable_size(size),
                            readable_size(limit))
                return
            self.writer.store_all()
            self.hold.keep_checkpoint(LocalFile(name, path))  # once open, the file is read whole
        except FileNotFoundError:
            log.info("run %s: checkpoint %s was removed by the run before it was stored (superseded)",
                     self.hold.run_id, name)

def _end(child: Any) -> None:
    """Kill the child unless it has already exited: once it has sent its result (or overstayed) nothing it does
    matters, and its interpreter's wind-down would only delay the run's outcome."""
    if child.is_alive():
        child.kill()
        child.join(KILL_WAIT_S)
