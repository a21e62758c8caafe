"""Request and response shapes of the runs API (the OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from anode_lab.status import RunStatus

RunKind = Literal["train", "compare", "demo"]
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.\-:+]+$")]
SERIES_NAME_PATTERN = r"^[A-Za-z0-9_.:/()+=\-]+$"
"""What a metric series is named (``train_loss``, ``anode/grad_rel_error``, ``adjoint(stored)/loss``): ASCII letters,
digits and ``_ . : / ( ) + = -``, spelled as a class rather than ``\\w`` so that the schema's regex dialect (ECMA,
ASCII ``\\w``) and the server's (Unicode ``\\w``) mean the same names."""
SERIES_NAME_MAX = 64
"""The store's column width (``metrics.series``)."""
SERIES_PER_REQUEST = 100
SeriesName = Annotated[str, StringConstraints(min_length=1, max_length=SERIES_NAME_MAX, pattern=SERIES_NAME_PATTERN)]
SQL_INT_MIN, SQL_INT_MAX = -(2**63), 2**63 - 1
"""What an integer column holds (SQLite and PostgreSQL BIGINT): ids and steps from a client are bounded by it."""


class RunCreate(BaseModel):
    """A run to queue. ``spec`` is validated against the spec model of ``kind`` (see ``GET /catalog``);
    an empty spec takes every default."""

    model_config = ConfigDict(extra="forbid")

    kind: RunKind
    spec: dict[str, Any] = Field(default_factory=dict)
    name: str = Field("", max_length=200)
    tags: list[Tag] = Field(default_factory=list, max_length=20)


class RunError(BaseModel):
    type: str
    message: str
    traceback: list[str] = Field(default_factory=list, description="last frames, innermost last")


class RunProgress(BaseModel):
    done: int
    total: int
    note: str = ""


class RunPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: RunKind
    name: str
    tags: list[str]
    spec: dict[str, Any]
    status: RunStatus
    status_detail: str = Field("", description="why a run waits (e.g. no live gpu worker), or how it ended")
    device: str
    attempt: int
    worker: str | None
    heartbeat: datetime | None
    cancel_requested: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    progress: RunProgress | None
    summary: dict[str, Any] | None
    message: str
    error: RunError | None
    group_id: int | None = Field(None, description="the side-by-side group (POST /groups) the run belongs to")


class RunsPublic(BaseModel):
    data: list[RunPublic]
    count: int = Field(description="runs matching the filters, over all pages")


class SeriesPoints(BaseModel):
    steps: list[int]
    values: list[float | None] = Field(description="null where the value was not finite")


class MetricsPublic(BaseModel):
    run_id: int
    series: dict[str, SeriesPoints]
    last_step: int | None = Field(description="pass as `after_step` to get only newer points")
    decimated: bool = Field(description="true when min/max buckets replaced full resolution")
    more_before: int | None = Field(None, description="older points exist (an event stream's first event holds "
                                    "a recent window): GET /runs/{id}/metrics?before_step=<this> pages back")


class ArtifactPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    size: int
    media_type: str
    created_at: datetime


class ArtifactsPublic(BaseModel):
    data: list[ArtifactPublic]
    count: int
