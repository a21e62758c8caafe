"""Request shapes of the tracker's API (``/external``): a run to open, a batch of points, how it ended."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from backend.runs.schemas import SQL_INT_MAX, SeriesName, StoredText, Tag

POINTS_PER_BATCH = 1000
SERIES_PER_POINT = 64
Value = Annotated[float, Field(allow_inf_nan=False, strict=True)] | None
"""A finite number, or null for a value that was not (NaN, ±inf): flagged, never converted."""


class ExternalCreate(BaseModel):
    """A tracked run: what the script says of itself. ``methods`` are the gradient methods its probes compare."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: StoredText = Field("", max_length=200)
    tags: list[Tag] = Field(default_factory=list, max_length=20)
    group: StoredText | None = Field(None, max_length=200, description="runs opened with the same group name (by the "
                              "same key) are shown side by side")
    gradient: SeriesName | None = Field(None, description="the gradient method the loop trains with (its label "
                                        "side by side)")
    methods: list[SeriesName] = Field(default_factory=list, max_length=16)
    probe_every: int | None = Field(None, ge=1, le=SQL_INT_MAX)
    description: StoredText = Field("", max_length=2000)


class Point(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    step: int = Field(ge=0, le=SQL_INT_MAX)
    values: dict[SeriesName, Value] = Field(max_length=SERIES_PER_POINT)


class PointsBatch(BaseModel):
    """Points in any order; a step sent again replaces its values. An empty batch is a heartbeat."""

    model_config = ConfigDict(extra="forbid", strict=True)

    points: list[Point] = Field(default_factory=list, max_length=POINTS_PER_BATCH)


class PointsStored(BaseModel):
    run_id: int
    stored: int
    total: int = Field(description="points the run holds now")


class ExternalEnd(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    status: Literal["succeeded", "failed", "diverged"]
    message: StoredText = Field("", max_length=4000)
    error_type: StoredText = Field("", max_length=200, description="the exception's class, for a failed run")
