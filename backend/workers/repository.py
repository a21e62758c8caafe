"""SQL for the ``workers`` table."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from backend.db import utcnow
from backend.models import Worker


def register(session: Session, *, worker_id: str, device: str, hostname: str, pid: int, device_name: str,
             device_memory: int | None = None, process_space: str | None = None) -> None:
    session.merge(Worker(id=worker_id, device=device, hostname=hostname, pid=pid, device_name=device_name,
                         device_memory=device_memory, process_space=process_space, started_at=utcnow(),
                         heartbeat=utcnow(), run_id=None))


def beat(session: Session, worker_id: str, run_id: int | None) -> None:
    session.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat=utcnow(), run_id=run_id))


def report_problem(session: Session, worker_id: str, problem: str | None) -> None:
    session.execute(update(Worker).where(Worker.id == worker_id).values(problem=problem))


def remove(session: Session, worker_id: str) -> None:
    session.execute(delete(Worker).where(Worker.id == worker_id))


def forget_older_than(session: Session, cutoff: datetime) -> None:
    session.execute(delete(Worker).where(Worker.heartbeat < cutoff))


def live(session: Session, cutoff: datetime) -> list[Worker]:
    return list(session.scalars(select(Worker).where(Worker.heartbeat >= cutoff).order_by(Worker.device, Worker.id)))


def live_devices(session: Session, cutoff: datetime) -> set[str]:
    return set(session.scalars(select(Worker.device).where(Worker.heartbeat >= cutoff).distinct()))


def in_space(session: Session, process_space: str) -> list[tuple[str, int, str]]:
    """``(id, pid, hostname)`` of the workers registered from ``process_space`` (a boot and process namespace)."""
    rows = session.execute(select(Worker.id, Worker.pid, Worker.hostname)
                           .where(Worker.process_space == process_space))
    return [(row.id, row.pid, row.hostname) for row in rows]
