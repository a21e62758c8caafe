"""The run's child process's side of its pipe to the worker: reports leave the step's thread at the cost of an
append, and travel in batches.

* ``on_metrics`` and ``on_progress`` put the report on a queue (:class:`queue.SimpleQueue`) and return; a sender
  thread sends what has gathered every :data:`BATCH_SECONDS` as one message, ``("batch", [report, ...])``, in the
  order the reports were made. The step's thread never pickles, writes to the pipe or waits for the worker.
* ``should_stop`` answers from the worker's last "go" while it is valid (a *permit* of at most
  :data:`PERMIT_SECONDS`, never past the worker's own lease window). When it has expired, the step's thread asks:
  an ``("ask",)`` goes behind every report made so far, the sender sends it at once, and the worker answers
  ``("go" | "stop", valid until)`` after storing all of them. A worker that lost its lease gives no answer and
  ends the process, so a child never writes into a run for long after its worker stopped renewing it (one step,
  or a permit, at most); a stop is kept once given.
* ``before_checkpoint`` always asks (and waits): a checkpoint is written only once every step reported before it
  is in the worker's journal, so a run resumed from it never skips a step whose metrics were lost with the
  process (metrics of later steps still in this buffer are lost with it, and computed again on resume).
* :meth:`Uplink.close` sends the run's last word (``("done", ...)`` or ``("error", ...)``) behind every report
  and waits for the sender to finish. A worker that is gone (a broken pipe) ends the process at once: its
  successor resumes the run.

``time.monotonic`` is one clock for the worker and its child (one host, ``CLOCK_MONOTONIC``), so a permit's end
travels as a time.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Mapping
from multiprocessing.connection import Connection
from typing import Any

BATCH_SECONDS = 0.1
"""How long reports gather before they are sent (the live view's first share of its latency)."""
PERMIT_SECONDS = 0.25
"""How long a "go" lets the run go on without asking again (a cancel's latency, at most, in steps shorter)."""
WORKER_GONE_EXIT = 3


class Uplink:
    """The reports and questions of one run's child, over ``conn`` (the worker's end is
    :class:`backend.workers.supervise.Supervisor`)."""

    def __init__(self, conn: Connection, batch_seconds: float = BATCH_SECONDS) -> None:
        self.conn, self.batch_seconds = conn, batch_seconds
        self._reports: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._closing = False
        self._stopped = False
        self._permit_until = -1.0
        self._sender = threading.Thread(target=self._send_loop, name="uplink", daemon=True)
        self._sender.start()

    # ------------------------------------------------------------------------------ the step's thread
    def on_metrics(self, step: int, values: Mapping[str, float]) -> None:
        self._reports.put(("metrics", step, dict(values)))  # a copy: the caller may reuse its dict

    def on_progress(self, done: int, total: int, note: str) -> None:
        self._reports.put(("progress", done, total, note))

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
        try:
            answer, until = self.conn.recv()
        except (EOFError, OSError):
            os._exit(WORKER_GONE_EXIT)
        self._permit_until = float(until)
        self._stopped = self._stopped or answer == "stop"
        return self._stopped

    def close(self, last: tuple[Any, ...]) -> None:
        """Send ``last`` behind every report, then return once all of it is in the pipe."""
        self._reports.put(last)
        self._closing = True
        self._wake.set()
        self._sender.join()

    # -------------------------------------------------------------------------------- the sender thread
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
                except (BrokenPipeError, ConnectionResetError, EOFError, OSError):
                    os._exit(WORKER_GONE_EXIT)  # the worker is gone: its successor resumes the run
            if closing:
                return
