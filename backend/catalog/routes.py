"""``GET /catalog``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend.catalog import service

router = APIRouter(tags=["catalog"])


@router.get("/catalog")
def get_catalog() -> dict[str, Any]:
    """Kinds with their spec JSON schema and default spec; solvers, gradient methods, activations, models,
    datasets, presets and demos with one-line descriptions; numeric bounds of every spec field."""
    return service.catalog()
