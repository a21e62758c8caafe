"""All SQL about groups. Functions take a session; the caller's unit of work commits."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.models import Group, Run


def add(session: Session, *, kind: str, name: str) -> Group:
    group = Group(kind=kind, name=name)
    session.add(group)
    session.flush()
    return group


def get(session: Session, group_id: int) -> Group | None:
    return session.get(Group, group_id)


def runs_of(session: Session, group_id: int) -> list[Run]:
    return list(session.scalars(select(Run).where(Run.group_id == group_id).order_by(Run.id)).all())
