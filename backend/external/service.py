"""What the tracker's API does: open an external run, store its points, end it, reap it when its script is gone.

An external run is held the way a worker holds a run it executes: ``Run.worker`` names the holder, here
``external:<digest of the client>`` (the client is its valid API key, else its address; the key itself is kept
nowhere). Every write is a conditional ``UPDATE`` on that holder and the ``running`` status, so a second key
cannot write into the run (403) and a finished run takes nothing more (409). Each batch renews the heartbeat;
a run whose script stopped sending is failed as lost by the reaper (:func:`reap_lost`).
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from anode_lab.status import RunStatus
from backend.db import utcnow
from backend.errors import Conflict, Forbidden, InvalidSpec, NotFound
from backend.external.schemas import ExternalCreate, ExternalEnd, PointsBatch, PointsStored
from backend.groups import repository as groups
from backend.models import Group, Metric, Run
from backend.runs import repository as runs
from backend.runs.schemas import RunPublic
from backend.runs.service import liveness, public
from backend.settings import Settings

LOST = "Lost"


def holder(client: str) -> str:
    """Who holds an external run: a digest of the client (``key:…`` or ``addr:…``), never the key."""
    return "external:" + hashlib.sha256(client.encode()).hexdigest()[:16]


def _group_id(session: Session, name: str, owner: str) -> int:
    """The group of that name whose runs the same client opened, else a new one."""
    mine = select(Run.group_id).where(Run.kind == "external", Run.worker == owner, Run.group_id.is_not(None))
    found = session.scalar(select(Group.id).where(Group.kind == "external", Group.name == name, Group.id.in_(mine))
                           .order_by(Group.id.desc()).limit(1))
    return found if found is not None else groups.add(session, kind="external", name=name).id


def open_run(session: Session, settings: Settings, body: ExternalCreate, client: str) -> RunPublic:
    owner = holder(client)
    group_id = _group_id(session, body.group, owner) if body.group else None
    spec = {"gradient": body.gradient, "methods": body.methods, "probe_every": body.probe_every,
            "description": body.description}
    run = runs.add(session, kind="external", name=body.name, spec=spec, device="cpu", tags=body.tags,
                   group_id=group_id)
    now = utcnow()
    run.status, run.worker, run.attempt, run.started_at, run.heartbeat, run.updated_at = (
        RunStatus.RUNNING, owner, 1, now, now, now)
    session.flush()
    return public(run, liveness(session, settings))


def _held(session: Session, run_id: int, client: str) -> Run:
    run = runs.get(session, run_id)
    if run is None or run.kind != "external":
        raise NotFound(f"no external run {run_id}: open one with POST /external")
    if run.worker is not None and run.worker != holder(client):
        raise Forbidden(f"run {run_id} is written only by the key that opened it")
    if run.status != RunStatus.RUNNING:
        raise Conflict(f"run {run_id} already ended as {run.status}; it takes no more points")
    return run


def add_points(session: Session, settings: Settings, run_id: int, body: PointsBatch, client: str) -> PointsStored:
    run = _held(session, run_id, client)
    rows = [(name, point.step, value) for point in body.points for name, value in point.values.items()]
    total = session.scalar(select(func.count()).select_from(Metric).where(Metric.run_id == run_id)) or 0
    if total + len(rows) > settings.max_external_points:
        raise InvalidSpec(f"run {run_id} holds {total} points; {len(rows)} more would pass the limit of "
                          f"{settings.max_external_points} (ANODE_MAX_EXTERNAL_POINTS): log less often, or end this "
                          "run and open another")
    stored = runs.upsert_metrics(session, run_id, rows)
    session.execute(update(Run).where(Run.id == run.id, Run.status == RunStatus.RUNNING, Run.worker == run.worker)
                    .values(heartbeat=utcnow()))
    return PointsStored(run_id=run_id, stored=stored, total=total + stored)


def end_run(session: Session, settings: Settings, run_id: int, body: ExternalEnd, client: str) -> RunPublic:
    run = _held(session, run_id, client)
    error = ({"type": body.error_type or "Error", "message": body.message, "traceback": []}
             if body.status == "failed" else None)
    assert run.worker is not None
    if not runs.finish(session, run_id, run.worker, status=body.status, message=body.message, error=error):
        raise Conflict(f"run {run_id} ended meanwhile; it takes no more points")
    session.refresh(run)
    return public(run, liveness(session, settings))


def reap_lost(session: Session, cutoff: datetime) -> list[int]:
    """Fail the running external runs whose script has not sent anything since ``cutoff``."""
    lost = list(session.scalars(select(Run.id).where(Run.kind == "external", Run.status == RunStatus.RUNNING,
                                                     Run.heartbeat < cutoff)))
    failed = []
    for run_id in lost:
        error = {"type": LOST, "traceback": [],
                 "message": "the tracking script stopped sending (killed, or its machine was lost); its points "
                            "up to then are kept"}
        if runs.fail_stale(session, run_id, cutoff, error):
            failed.append(run_id)
    return failed
