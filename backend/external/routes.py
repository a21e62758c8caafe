"""HTTP routes of the tracker's API; the rules live in :mod:`backend.external.service`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, status

from backend.deps import SessionDep, SettingsDep, limit_creation
from backend.external import service
from backend.external.schemas import ExternalCreate, ExternalEnd, PointsBatch, PointsStored
from backend.runs.schemas import SQL_INT_MAX, RunPublic
from backend.security import client_key

router = APIRouter(prefix="/external", tags=["external"])
RunId = Annotated[int, Path(ge=1, le=SQL_INT_MAX)]


async def _client(request: Request, settings: SettingsDep) -> str:
    """Who writes: the valid key (``require_api_key`` declares and checks it where keys exist), else the address."""
    key = request.headers.get("X-API-Key")
    return client_key(settings, key, request.client.host if request.client else None)


ClientDep = Annotated[str, Depends(_client)]


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(limit_creation)])
def open_run(body: ExternalCreate, session: SessionDep, settings: SettingsDep, client: ClientDep) -> RunPublic:
    """Open a run of kind ``external`` for a training loop of your own (``anode_lab.track`` does this)."""
    return service.open_run(session, settings, body, client)


@router.post("/{run_id}/points")
def add_points(run_id: RunId, body: PointsBatch, session: SessionDep, settings: SettingsDep,
               client: ClientDep) -> PointsStored:
    """Store a batch of points (an empty batch renews the heartbeat); 403 for another key, 409 once ended."""
    return service.add_points(session, settings, run_id, body, client)


@router.post("/{run_id}/end")
def end_run(run_id: RunId, body: ExternalEnd, session: SessionDep, settings: SettingsDep,
            client: ClientDep) -> RunPublic:
    """End the run: ``succeeded``, ``failed`` (with the exception's message) or ``diverged``."""
    return service.end_run(session, settings, run_id, body, client)
