"""The run's child process's side of its pipe to the worker: reports leave the step's thread at the cost of an
append, and travel in batches; the step's thread waits for the worker only before a checkpoint.

* ``on_metrics`` and ``on_progress`` put the report on a queue (:class:`queue.SimpleQueue`) and return; a sender
  thread sends what has gathered every :data:`BATCH_SECONDS` as one message, ``("batch", [report, ...])``, in the
  order the reports were made. The step's thread never pickles, writes to the pipe or waits for the worker.
* The worker sends, unasked, ``(answer, until, False)``: "go" (a *permit*, renewed before it runs out, valid at
  most :data:`PERMIT_SECONDS` and never past the worker's own lease window) or "stop" (cancel, shutdown) as soon
  as it knows; a reader thread keeps the latest. ``should_stop`` answers from it while the permit holds. When it
  has run out (the worker stalled, or lost its lease and is ending this process), the step's thread asks and
  waits, so a child never goes on writing into a run for long after its worker stopped renewing it; a stop is
  kept once given.
* ``before_checkpoint`` asks and waits: an ``("ask",)`` goes behind every report made so far, the sender sends it
  at once, and the worker answers ``(answer, until, True)`` after storing all of them. So a checkpoint is written
  only once every step reported before it is in the worker's journal, and a run resumed from it never skips a
  step whose metrics were lost with the process (those of later steps, still in this buffer, are lost with it
  and computed again on resume). A worker that lost its lease gives no answer and ends the process.
* :meth:`Uplink.close` sends the run's last word (``("done", ...)`` or ``("error", ...)``) behind every report
  and waits for the sender to finish. A worker that is gone (a broken or closed pipe) ends the process at once:
  its successor resumes the run.

``time.monotonic`` is one clock for the worker and its child (one host, ``CLOCK_MONOTONIC``), so a permit's end
travels as a time.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

BATCH_SECONDS = 0.1
"""How long reports gather before they are sent (the live view's first share of its latency)."""
PERMIT_SECONDS = 1.0
"""How long a "go" lets a run go on without hearing from its worker again; the worker renews it halfway."""
WORKER_GONE_EXIT = 3


def _exit() -> None:
    os._exit(WORKER_GONE_EXIT)  # the worker is gone: its successor resumes the run


class Uplink:
    """The reports and questions of one run's child, over ``conn`` (the worker's end is
    :class:`backend.workers.supervise.Supervisor`). ``worker_gone`` runs when the pipe breaks (default: end
    the process at once)."""

    def __init__(self, conn: Connection, batch_seconds: float = BATCH_SECONDS,
                 worker_gone: Callable[[], None] = _exit) -> None:
        self.conn, self.batch_seconds, self.worker_gone = conn, batch_seconds, worker_gone
        self._reports: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._answers: queue.SimpleQueue[None] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closing = False
        self._stopped = False
        self._permit_until = -1.0
        self._sender = threading.Thread(target=self._send_loop, name="uplink-send", daemon=True)
        self._sender.start()
        threading.Thread(target=self._receive_loop, name="uplink-receive", daemon=True).start()

    # ------------------------------------------------------------------------------ the step's thread
    def on_metrics(self, step: int, values: Mapping[str, float]) -> None:
        self._reports.put(("metrics", step, dict(values)))  # a copy: the caller may reuse its dict

    def on_progress(self, done: int, total: int, note: str) -> None:
        self._reports.put(("progress", done, total, note))

    def on_checkpoint(self, name: str) -> None:
        """The checkpoint ``name`` (in the run's folder) was saved: the worker keeps it in the store, behind every
        report before it; the next :meth:`before_checkpoint` waits until it has, so it is never replaced while read."""
        self._reports.put(("checkpoint", name))

    def should_stop(self) -> bool:
        if self._stopped or time.monotonic() < self._permit_until:
            return self._stopped
        return self.ask()

    def before_checkpoint(self) -> None:
        self.ask()

    def ask(self) -> bool:
        """Send ``("ask",)`` behind every report so far and wait for the worker's answer: True to stop."""
        self._reports.put(("ask",))
        self._wake.set()
        self._answers.get()
        return self._stopped

    def close(self, last: tuple[Any, ...]) -> None:
        """Send ``last`` behind every report, then return once all of it is in the pipe."""
        self._reports.put(last)
        self._closing = True
        self._wake.set()
        self._sender.join()

    # ------------------------------------------------------------------------------------ the two threads
    def _send_loop(self) -> None:
        while True:
            self._wake.wait(self.batch_seconds)
            self._wake.clear()
            closing = self._closing  # read before draining: whatever close() put is drained below
            batch = []
            while True:
                try:
                    batch.append(self._reports.get_nowait())
                except queue.Empty:
                    break
            if batch:
                try:
                    self.conn.send(("batch", batch))
                except (OSError, EOFError):
                    self.worker_gone()
                    return
            if closing:
                return

    def _receive_loop(self) -> None:
        while True:
            try:
                answer, until, asked = self.conn.recv()  # ("go" | "stop", permit until, answers an ask)
            except (OSError, EOFError):
                if not self._closing:  # else the worker has had the last word and is done with this process
                    self.worker_gone()
                return
            self._permit_until = float(until)
            self._stopped = self._stopped or answer == "stop"
            if asked:
                self._answers.put(None)
