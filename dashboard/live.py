"""One poll of a live run, shared by every viewer of it in this dashboard process.

Every viewer's page reaches the API through the dashboard's one process, so the API's per-client caps
(``ANODE_MAX_STREAMS_PER_CLIENT``: metric reads held at once by one key, else one address) see the whole
classroom as one client: thirty tabs polling a run each on their own got 429s. Here the viewers of a run share
one ``GET /runs/{id}`` and one ``GET /runs/{id}/metrics?after_step=…`` per :data:`MAX_AGE` seconds, whatever
their number: the first viewer to find the run's answer older than that asks the API (with their own key) while
the others of that run wait for it, then all of them draw the same answer. The API sees about one poll per
refresh interval, and a point the worker wrote is on every viewer's page within ``REFRESH + MAX_AGE``.

Sharing is sound because any key the API accepts reads every run (``DESIGN.md`` §4): a session reaches these
reads only after :func:`dashboard.components.connect` has had the API accept its key, or, without keys, after
the dashboard has checked that it is on this machine. What is held is bounded: per run one metrics payload of
at most ``2 × METRIC_POINTS`` points per series (longer ones are read again, decimated), and a run nobody has
looked at for :data:`KEEP_S` seconds is dropped.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dashboard.api_client import ApiClient, Run
from dashboard.series import Payload, longest, merge
from dashboard.tables import ACTIVE

MAX_AGE = 1.0
"""Seconds an answer of the API about a run is shown to other viewers before one of them asks again."""
KEEP_S = 60.0
"""A run no viewer has read for this long is forgotten (its payload freed)."""
METRIC_POINTS = 1500
"""Points per series asked of the API: it decimates longer series (keeping each bucket's min and max)."""


@dataclass
class _Watched:
    """What the viewers of one run share; ``lock`` makes one of them poll while the others wait."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    run: Run | None = None
    run_at: float = -float("inf")
    payload: Payload | None = None
    payload_at: float = -float("inf")
    final: bool = False
    """The payload was read after the run had ended, so it is complete and never asked for again."""
    seen_at: float = 0.0


class SharedPoll:
    """The runs this dashboard's viewers watch, each read from the API at most once per ``max_age`` seconds."""

    def __init__(self, *, max_age: float = MAX_AGE, keep_s: float = KEEP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_age, self.keep_s, self.clock = max_age, keep_s, clock
        self._lock = threading.Lock()
        self._runs: dict[int, _Watched] = {}

    def __len__(self) -> int:
        return len(self._runs)

    def run(self, api: ApiClient, run_id: int) -> Run:
        """``GET /runs/{run_id}`` as some viewer read it at most ``max_age`` seconds ago (``api`` reads it if not)."""
        watched = self._watched(run_id)
        with watched.lock:
            if watched.run is None or self.clock() - watched.run_at > self.max_age:
                watched.run, watched.run_at = api.get_run(run_id), self.clock()
            return watched.run

    def metrics(self, api: ApiClient, run: Run) -> Payload:
        """The run's metrics, decimated to about :data:`METRIC_POINTS` per series, extended by ``after_step``
        polls at most once per ``max_age`` seconds. ``run`` was read before the metrics are: once it has ended,
        the points read after it are complete and are kept without asking again."""
        watched = self._watched(run["id"])
        with watched.lock:
            payload = watched.payload
            if payload is not None and (watched.final or self.clock() - watched.payload_at <= self.max_age):
                return payload
            if payload is None or payload.get("last_step") is None:
                payload = api.metrics(run["id"], points=METRIC_POINTS)
            else:
                payload = merge(payload, api.metrics(run["id"], after_step=payload["last_step"],
                                                     points=METRIC_POINTS))
                if longest(payload) > 2 * METRIC_POINTS:
                    payload = api.metrics(run["id"], points=METRIC_POINTS)
            watched.payload, watched.payload_at = payload, self.clock()
            watched.final = run["status"] not in ACTIVE
            return payload

    def forget(self, run_id: int) -> None:
        """Read ``run_id`` afresh next time: a viewer just changed it (cancel), and should see that at once."""
        with self._lock:
            self._runs.pop(run_id, None)

    def _watched(self, run_id: int) -> _Watched:
        now = self.clock()
        with self._lock:
            for stale in [i for i, w in self._runs.items() if now - w.seen_at > self.keep_s and i != run_id]:
                del self._runs[stale]
            watched = self._runs.setdefault(run_id, _Watched())
            watched.seen_at = now
            return watched
