"""``GET /health``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from backend.deps import DatabaseDep, QueuesDep, SettingsDep, json_response
from backend.health import service
from backend.health.service import HealthPublic, StreamsPublic

router = APIRouter(tags=["health"])


@router.get("/health", response_model=HealthPublic)
def get_health(request: Request, db: DatabaseDep, settings: SettingsDep, queues: QueuesDep) -> Response:
    streams = StreamsPublic(active=request.app.state.streams.active, limit=settings.max_streams)
    with db.session() as session:
        return json_response(service.health(session, settings, queues, streams))
