"""Server-Sent Events of one run: ``status`` when its state changes, ``metrics`` with new points, ``end`` once.

Every event's id is the last metrics step sent, so a client reconnecting with ``Last-Event-ID`` gets a status
snapshot and the points after that step. The stream polls the store (``ANODE_SSE_POLL_SECONDS``); each poll is
one short read session on a worker thread and reads at most a page per series, so a stream's memory does not grow
with the run's history.
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
from backend.runs import reads, service
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
          seen: datetime | None) -> tuple[datetime, str, dict[str, Any] | None, reads.Block]:
    """``(updated_at, status, run payload if it changed since seen, the next block of points)``; the run is read
    before its metrics, so when it has finished and the block is complete, nothing is left to send."""
    with db.session() as session:
        run = service.require(session, run_id)
        payload = None
        if run.updated_at != seen:
            payload = service.public(run, service.liveness(session, settings)).model_dump(mode="json")
        _, block = reads.read_new(session, run_id, None, after_step=cursor)
    return run.updated_at, run.status, payload, block


def _window(db: Database, run_id: int, points: int) -> int | None:
    with db.session() as session:
        return reads.window_start(session, run_id, points)


async def run_events(db: Database, settings: Settings, run_id: int, cursor: int, *, window: bool,
                     disconnected: Callable[[], Awaitable[bool]]) -> AsyncIterator[dict[str, str]]:
    """With ``window`` (the client named no step to resume after), the first metrics event holds each series'
    ``ANODE_SSE_WINDOW_POINTS`` newest points and ``more_before``, the step to page back from; after it, and
    after a cursor, points come in blocks of at most a page per series until the stream has caught up."""
    seen: datetime | None = None
    more_before = await to_thread.run_sync(_window, db, run_id, settings.sse_window_points) if window else None
    if more_before is not None:
        cursor = more_before - 1
    while True:
        try:
            seen, status, payload, block = await to_thread.run_sync(_poll, db, settings, run_id, cursor, seen)
        except NotFound:
            yield {"event": "end", "id": str(cursor), "data": json.dumps({"status": "deleted"})}
            return
        if block.series and block.last_step is not None:
            cursor = block.last_step
            metrics = reads.public(run_id, block, more_before=more_before).model_dump(mode="json")
            more_before = None
            yield {"event": "metrics", "id": str(cursor), "data": json.dumps(metrics)}
        if payload is not None:
            yield {"event": "status", "id": str(cursor), "data": json.dumps(payload)}
        if status in FINISHED and block.complete:
            yield {"event": "end", "id": str(cursor), "data": json.dumps({"status": status})}
            return
        if await disconnected():
            return
        if block.complete:
            await anyio.sleep(settings.sse_poll_seconds)
