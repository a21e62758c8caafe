"""Server-Sent Events of one run: ``status`` when its state changes, ``metrics`` with new points, ``end`` once.

Every event's id is the last metrics step sent, so a client reconnecting with ``Last-Event-ID`` gets a status
snapshot and the points after that step. The stream polls the store (``ANODE_SSE_POLL_SECONDS``); each poll is
one short read session on a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import anyio
from anyio import to_thread

from anode_lab.status import FINISHED
from backend.db import Database
from backend.errors import NotFound
from backend.runs import service
from backend.runs.schemas import SQL_INT_MAX, SQL_INT_MIN
from backend.settings import Settings


def parse_cursor(last_event_id: str | None, after_step: int | None) -> int:
    """The step after which to send metrics: ``Last-Event-ID`` wins over ``after_step``; -1 sends all."""
    if last_event_id:
        try:
            step = int(last_event_id)
        except ValueError:
            pass
        else:
            if SQL_INT_MIN <= step <= SQL_INT_MAX:  # beyond, the database driver overflows: ignore it
                return step
    return -1 if after_step is None else after_step


def _poll(db: Database, settings: Settings, run_id: int, cursor: int,
          seen: datetime | None) -> tuple[datetime, str, dict[str, Any] | None, dict[str, Any] | None]:
    """``(updated_at, status, run payload if it changed since seen, metrics payload if new points)``; the run is
    read before its metrics, so when it has finished the metrics read after it are complete."""
    with db.session() as session:
        run = service.require(session, run_id)
        payload = None
        if run.updated_at != seen:
            payload = service.public(run, service.liveness(session, settings)).model_dump(mode="json")
        points = service.metrics(session, run_id, series=None, after_step=cursor, points=None)
    metrics = points.model_dump(mode="json") if points.series else None
    return run.updated_at, run.status, payload, metrics


async def run_events(db: Database, settings: Settings, run_id: int, cursor: int,
                     disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[dict[str, str]]:
    seen: datetime | None = None
    while True:
        try:
            seen, status, payload, metrics = await to_thread.run_sync(_poll, db, settings, run_id, cursor, seen)
        except NotFound:
            yield {"event": "end", "id": str(cursor), "data": json.dumps({"status": "deleted"})}
            return
        if metrics is not None:
            cursor = metrics["last_step"]
            yield {"event": "metrics", "id": str(cursor), "data": json.dumps(metrics)}
        if payload is not None:
            yield {"event": "status", "id": str(cursor), "data": json.dumps(payload)}
        if status in FINISHED:
            yield {"event": "end", "id": str(cursor), "data": json.dumps({"status": status})}
            return
        if await disconnected():
            return
        await anyio.sleep(settings.sse_poll_seconds)
