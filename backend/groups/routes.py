"""``/groups`` endpoints: side-by-side runs, one per gradient method."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from backend.deps import QueuesDep, SessionDep, SettingsDep, take_creation_tokens
from backend.groups import service
from backend.groups.schemas import GroupCreate, GroupPublic
from backend.runs.schemas import SQL_INT_MAX

router = APIRouter(prefix="/groups", tags=["groups"])
GroupId = Annotated[int, Path(ge=1, le=SQL_INT_MAX)]


@router.post("", status_code=status.HTTP_201_CREATED)
def create_group(body: GroupCreate, request: Request, session: SessionDep, settings: SettingsDep,
                 queues: QueuesDep) -> GroupPublic:
    """One training run per method, identical but for the gradient method (same seed, same data order); the
    whole group is validated first, and is created whole or not at all (422 names ``methods.<i>``). It takes one
    creation token per run (429 past the burst, as ``POST /runs``)."""
    take_creation_tokens(request, settings, len(body.methods))
    return service.create_group(session, settings, queues, body)


@router.get("/{group_id}")
def get_group(group_id: GroupId, session: SessionDep, settings: SettingsDep) -> GroupPublic:
    """The group with each run's status and spec."""
    return service.get_group(session, settings, group_id)
