"""How a worker stores a run's metrics: journal every report at once, write complete steps to the store in
batches from a background thread.

* Every report (``add``, or a batch of them from the run's child: ``add_many``) is appended to the run's
  journal (:mod:`backend.runs.journal`) at once, a batch in one write, so it survives the worker being killed.
  A retried attempt replays the journal into the store first, so steps reported before a kill but after the
  last batch are never lost, even when the run resumes from a checkpoint taken after them.
* A writer thread stores what arrived every ``flush_seconds`` (at once when it is 0) as one upsert keyed by
  (run, series, step): a step reported again replaces its value instead of adding a row. Training never waits
  for the store (SQLite's write lock may be busy with other workers) and never converts a value. Only complete
  steps are written (a step is complete once a later one is reported, or the run ends), so readers never see
  half a step.
* Both carry the run's lease (:class:`~backend.runs.lifecycle.Hold`): a report is journaled only while the lease
  holds, and a batch is stored only under it; once it is lost they raise :class:`~backend.runs.lifecycle.LeaseLost`.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path

from anode_lab.names import check_series_name
from backend.runs import journal
from backend.runs.lifecycle import Hold
from backend.runs.repository import MetricRow

REPLAY_CHUNK = 5000
Report = tuple[int, tuple[str, ...], tuple[float, ...]]


def finite(value: float) -> float | None:
    """``None`` for NaN and ±inf (JSON has no such numbers)."""
    value = float(value)
    return value if value - value == 0.0 else None


def _rows(reports: list[Report]) -> list[MetricRow]:
    return [
        (name, step, finite(value))
        for step, names, values in reports
        for name, value in zip(names, values, strict=True)
    ]


class MetricWriter:
    """``RunContext.on_metrics`` of a worker; :meth:`start` the writer thread, :meth:`close` at the end."""

    def __init__(self, hold: Hold, workdir: Path, flush_seconds: float) -> None:
        self.hold, self.flush_seconds = hold, flush_seconds
        self.workdir = workdir
        self.journal = journal.Journal(workdir)
        self._arrived: deque[Report] = deque()
        self._held: list[Report] = []
        self._wake = threading.Event()
        self._stored: deque[threading.Event] = deque()
        self._closing = False
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.written = 0

    def replay(self) -> int:
        """Store what earlier attempts journaled (idempotent); returns the number of rows."""
        rows: list[MetricRow] = []
        total = 0
        for step, values in journal.read(self.workdir):
            rows.extend((name, step, finite(value)) for name, value in values.items())
            if len(rows) >= REPLAY_CHUNK:
                total += self._write(rows)
                rows = []
        return total + self._write(rows)

    def start(self) -> MetricWriter:
        self._thread = threading.Thread(target=self._loop, name=f"metrics-{self.hold.run_id}", daemon=True)
        self._thread.start()
        return self

    def add(self, step: int, values: Mapping[str, float]) -> None:
        self.add_many([(step, values)])

    def add_many(self, reports: Sequence[tuple[int, Mapping[str, float]]]) -> None:
        """Journal ``(step, values)`` reports in one write and hand them to the writer thread."""
        if self._error is not None:
            raise RuntimeError(f"storing metrics failed: {self._error}") from self._error
        if not reports:
            return
        batch = []
        for step, values in reports:
            for name in values:
                check_series_name(name)
            batch.append((int(step), tuple(values), tuple(map(float, values.values()))))
        self.hold.confirm()
        self.journal.append_many(batch)
        self._arrived.extend(batch)
        if not self.flush_seconds:
            self._wake.set()

    def store_all(self) -> None:
        """Store every report so far, the newest step too, before returning (a checkpoint is about to be kept: the
        step before it is whole); raises if storing failed."""
        if self._thread is None:
            if self._error is None:
                self._flush(final=True)
        else:
            stored = threading.Event()
            self._stored.append(stored)
            self._wake.set()
            while not stored.wait(0.05) and self._error is None and self._thread.is_alive():
                pass
        if self._error is not None:
            raise RuntimeError(f"storing metrics failed: {self._error}") from self._error

    def close(self) -> None:
        """Store everything, the last step included; raises if the writer thread failed."""
        self._closing = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        elif self._error is None:
            self._flush(final=True)
        self.journal.close()
        if self._error is not None:
            raise RuntimeError(f"storing metrics failed: {self._error}") from self._error

    def _loop(self) -> None:
        while True:
            self._wake.wait(self.flush_seconds or None)
            self._wake.clear()
            closing, asked = self._closing, len(self._stored)
            try:
                self._flush(final=closing or bool(asked))
            except Exception as exc:
                self._error = exc
                return
            for _ in range(asked):
                self._stored.popleft().set()
            if closing:
                return

    def _flush(self, *, final: bool) -> None:
        reports = self._held
        while self._arrived:
            reports.append(self._arrived.popleft())
        if final or not reports:
            self._held = []
        else:
            last = reports[-1][0]
            cut = len(reports)
            while cut and reports[cut - 1][0] == last:
                cut -= 1
            reports, self._held = reports[:cut], reports[cut:]
        self._write(_rows(reports))

    def _write(self, rows: list[MetricRow]) -> int:
        if not rows:
            return 0
        count = self.hold.store_metrics(rows)
        self.written += count
        return count
