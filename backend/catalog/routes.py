"""``GET /catalog``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from backend.catalog import service
from backend.deps import SettingsDep

router = APIRouter(tags=["catalog"])


@router.get("/catalog")
def get_catalog(settings: SettingsDep) -> dict[str, Any]:
    """Kinds with their spec JSON schema and default spec; solvers, gradient methods, activations, models,
    datasets (with the files a local one needs under its `root`), presets and demos with one-line descriptions;
    numeric bounds of every spec field; `data_roots`, the folders a `root` must lie under."""
    return {**service.catalog(), "data_roots": [str(root) for root in settings.allowed_data_roots]}
