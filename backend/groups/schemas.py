"""Request and response shapes of the groups API."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.runs.schemas import RunPublic, StoredText, Tag

MAX_METHODS = 8
"""Runs one group may create (the catalog lists fewer methods than this, with their variants)."""


class GroupCreate(BaseModel):
    """One training run per entry of ``methods``: ``spec`` with its ``ode.gradient`` replaced by the entry, so
    the runs share everything else (seed, data order, model, solver)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["train"] = "train"
    spec: dict[str, Any] = Field(default_factory=dict)
    methods: list[dict[str, Any]] = Field(
        min_length=1, max_length=MAX_METHODS,
        description='gradient settings, one run each: [{"method": "direct"}, {"method": "anode", "checkpoints": 2}]')
    name: StoredText = Field("", max_length=160, description="each run is named `<name> · <method>`")
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class GroupPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str
    name: str
    created_at: datetime
    runs: list[RunPublic] = Field(description="one per method, in the order the methods were given")
