"""What the tracker's API does: open an external run, store its points, end it.

An external run is held the way a worker holds a run it executes (:mod:`backend.runs.lifecycle`): a lease whose
holder is ``external:<digest of the client>`` (the client is its valid API key, else its address; the key itself
is kept nowhere). Every write renews that lease first, in the same unit of work, so a second key cannot write
into the run (403), a finished or cancelled run takes nothing more (409), and each batch is the heartbeat; the
reaper fails a run whose script stopped sending as lost (:func:`backend.runs.lifecycle.reap`).
"""

from __future__ import annotations

import hashlib

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from anode_lab.status import RunStatus
from backend.errors import Conflict, Forbidden, InvalidSpec, NotFound
from backend.external.schemas import ExternalCreate, ExternalEnd, PointsBatch, PointsStored
from backend.groups import repository as groups
from backend.models import Group, Metric, Run
from backend.runs import lifecycle, repository as runs
from backend.runs.lifecycle import EXTERNAL, Lease
from backend.runs.schemas import RunPublic
from backend.runs.service import liveness, public
from backend.settings import Settings


def holder(client: str) -> str:
    """Who holds an external run: a digest of the client (``key:…`` or ``addr:…``), never the key."""
    return "external:" + hashlib.sha256(client.encode()).hexdigest()[:16]


def _group_id(session: Session, name: str, owner: str) -> int:
    """The group of that name whose runs the same client opened, else a new one."""
    mine = select(Run.group_id).where(Run.kind == EXTERNAL, Run.worker == owner, Run.group_id.is_not(None))
    found = session.scalar(select(Group.id).where(Group.kind == EXTERNAL, Group.name == name, Group.id.in_(mine))
                           .order_by(Group.id.desc()).limit(1))
    return found if found is not None else groups.add(session, kind=EXTERNAL, name=name).id


def open_run(session: Session, settings: Settings, body: ExternalCreate, client: str) -> RunPublic:
    owner = holder(client)
    group_id = _group_id(session, body.group, owner) if body.group else None
    spec = {"gradient": body.gradient, "methods": body.methods, "probe_every": body.probe_every,
            "description": body.description}
    run = runs.add(session, kind=EXTERNAL, name=body.name, spec=spec, device="cpu", tags=body.tags,
                   group_id=group_id)
    lifecycle.open_external(session, run, owner)
    return public(run, liveness(session, settings))


def _held(session: Session, run_id: int, client: str) -> Lease:
    """The tracker's lease, renewed (the row stays locked until the request commits); else why not, as an error."""
    run = runs.get(session, run_id)
    if run is None or run.kind != EXTERNAL:
        raise NotFound(f"no external run {run_id}: open one with POST /external")
    if run.worker is not None and run.worker != holder(client):
        raise Forbidden(f"run {run_id} is written only by the key that opened it")
    lease = Lease(run_id, holder(client), run.attempt)
    if run.status != RunStatus.RUNNING or not runs.renew(session, lease):
        session.refresh(run)
        raise Conflict(f"run {run_id} already ended as {run.status}; it takes no more points")
    return lease


def add_points(session: Session, settings: Settings, run_id: int, body: PointsBatch, client: str) -> PointsStored:
    _held(session, run_id, client)
    rows = [(name, point.step, value) for point in body.points for name, value in point.values.items()]
    total = session.scalar(select(func.count()).select_from(Metric).where(Metric.run_id == run_id)) or 0
    if total + len(rows) > settings.max_external_points:
        raise InvalidSpec(f"run {run_id} holds {total} points; {len(rows)} more would pass the limit of "
                          f"{settings.max_external_points} (ANODE_MAX_EXTERNAL_POINTS): log less often, or end this "
                          "run and open another")
    stored = runs.upsert_metrics(session, run_id, rows)
    return PointsStored(run_id=run_id, stored=stored, total=total + stored)


def end_run(session: Session, settings: Settings, run_id: int, body: ExternalEnd, client: str) -> RunPublic:
    lease = _held(session, run_id, client)
    error = ({"type": body.error_type or "Error", "message": body.message, "traceback": []}
             if body.status == "failed" else None)
    if not runs.finish(session, lease, status=body.status, message=body.message, error=error):
        raise Conflict(f"run {run_id} ended meanwhile; it takes no more points")
    run = runs.get(session, run_id)
    assert run is not None
    session.refresh(run)
    return public(run, liveness(session, settings))
