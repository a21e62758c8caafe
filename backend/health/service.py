"""Health: can the store be read, how long are the queues, which workers renewed their heartbeat lately."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel
from sqlalchemy.orm import Session

from backend.db import utcnow
from backend.health import repository as store
from backend.queue import RunQueues
from backend.settings import Settings
from backend.workers import repository as workers


class WorkerPublic(BaseModel):
    id: str
    device: str
    device_name: str
    device_memory: int | None
    """Bytes: the GPU's total memory (gpu workers) or the host's RAM (cpu workers)."""
    hostname: str
    pid: int
    started_at: datetime
    heartbeat: datetime
    run_id: int | None


class QueuePublic(BaseModel):
    ok: bool
    backend: str
    pending: dict[str, int]
    detail: str = ""


class HealthPublic(BaseModel):
    status: str
    database: dict[str, str | bool]
    queue: QueuePublic
    workers: list[WorkerPublic]
    devices: list[str]


def health(session: Session, settings: Settings, queues: RunQueues) -> HealthPublic:
    db_ok, db_detail = True, session.get_bind().dialect.name
    try:
        store.ping(session)
    except Exception as exc:
        db_ok, db_detail = False, str(exc)
    backend = "redis" if settings.queue_url and not settings.queue_url.startswith("sqlite") else "sqlite"
    try:
        queue = QueuePublic(ok=True, backend=backend, pending=queues.sizes())
    except Exception as exc:
        queue = QueuePublic(ok=False, backend=backend, pending={}, detail=str(exc))
    live: list[WorkerPublic] = []
    if db_ok:
        cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout_seconds)
        live = [WorkerPublic.model_validate(w, from_attributes=True) for w in workers.live(session, cutoff)]
    ok = db_ok and queue.ok
    return HealthPublic(status="ok" if ok else "degraded", database={"ok": db_ok, "detail": db_detail},
                        queue=queue, workers=live, devices=sorted({w.device for w in live}))
