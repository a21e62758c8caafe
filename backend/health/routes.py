"""``GET /health``."""

from __future__ import annotations

from fastapi import APIRouter, Request

from backend.deps import QueuesDep, SessionDep, SettingsDep
from backend.health import service
from backend.health.service import HealthPublic, StreamsPublic

router = APIRouter(tags=["health"])


@router.get("/health")
def get_health(request: Request, session: SessionDep, settings: SettingsDep, queues: QueuesDep) -> HealthPublic:
    streams = StreamsPublic(active=request.app.state.streams.active, limit=settings.max_streams)
    return service.health(session, settings, queues, streams)
