"""``GET /health``."""

from __future__ import annotations

from fastapi import APIRouter

from backend.deps import QueuesDep, SessionDep, SettingsDep
from backend.health import service
from backend.health.service import HealthPublic

router = APIRouter(tags=["health"])


@router.get("/health")
async def get_health(session: SessionDep, settings: SettingsDep, queues: QueuesDep) -> HealthPublic:
    return service.health(session, settings, queues)
