"""Health: can the store be read, how long are the queues, is the disk nearly full, how many streams are served,
which workers renewed their heartbeat lately and whether each can run experiments."""

from __future__ import annotations

import shutil
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
    problem: str | None = None
    """Why this worker cannot run experiments (its start-up check failed); /health is then degraded."""


class QueuePublic(BaseModel):
    ok: bool
    backend: str
    pending: dict[str, int]
    detail: str = ""


class DiskPublic(BaseModel):
    ok: bool
    free_bytes: int
    min_free_bytes: int
    detail: str = ""


class StreamsPublic(BaseModel):
    active: int
    limit: int


class HealthPublic(BaseModel):
    status: str
    database: dict[str, str | bool]
    queue: QueuePublic
    disk: DiskPublic
    streams: StreamsPublic
    workers: list[WorkerPublic]
    devices: list[str]


def disk(settings: Settings) -> DiskPublic:
    """Free space under the data folder (the SQLite store, the queue, checkpoints and artifacts)."""
    try:
        free = shutil.disk_usage(settings.data_dir).free
    except OSError as exc:
        return DiskPublic(ok=False, free_bytes=0, min_free_bytes=settings.min_free_disk_bytes,
                          detail=f"cannot read the free space of the data folder: {exc.strerror}")
    if free >= settings.min_free_disk_bytes:
        return DiskPublic(ok=True, free_bytes=free, min_free_bytes=settings.min_free_disk_bytes)
    return DiskPublic(ok=False, free_bytes=free, min_free_bytes=settings.min_free_disk_bytes,
                      detail=f"low disk: {free / 2**20:.0f} MiB free under the data folder, below "
                             f"ANODE_MIN_FREE_DISK_BYTES ({settings.min_free_disk_bytes / 2**20:.0f} MiB); free space "
                             "before runs and the store fail to write")


def health(session: Session, settings: Settings, queues: RunQueues, streams: StreamsPublic) -> HealthPublic:
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
    space = disk(settings)
    ok = db_ok and queue.ok and space.ok and not any(w.problem for w in live)
    return HealthPublic(status="ok" if ok else "degraded", database={"ok": db_ok, "detail": db_detail},
                        queue=queue, disk=space, streams=streams, workers=live,
                        devices=sorted({w.device for w in live}))
