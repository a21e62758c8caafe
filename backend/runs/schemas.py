"""Request and response shapes of the runs API (the OpenAPI contract)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from anode_lab.names import SERIES_NAME_MAX, SERIES_NAME_PATTERN
from anode_lab.specs.common import control_character
from anode_lab.status import RunStatus

RunKind = Literal["train", "compare", "demo", "external"]
"""``external`` runs come from a user's own training loop (``anode_lab.track``, ``POST /external``)."""
QueuedKind = Literal["train", "compare", "demo"]
"""The kinds a worker runs from a spec (``POST /runs``)."""
Tag = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\w.\-:+]+$")]


def printable(text: str) -> str:
    """``text`` if both stores (and a reader) take it as text: no control character, no lone surrogate."""
    problem = control_character(text)
    if problem:
        raise ValueError(problem)
    return text


PRINTABLE_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f]*$"
"""No C0 or C1 control character: what :func:`printable` enforces, as the OpenAPI schema states it."""
StoredText = Annotated[str, AfterValidator(printable), Field(json_schema_extra={"pattern": PRINTABLE_PATTERN})]
"""A client's string that is stored: refused (422 naming the field) rather than failing in a store (a NUL is a
500 on PostgreSQL) or showing up as layout in a reader."""

SERIES_PER_REQUEST = 100
SeriesName = Annotated[str, StringConstraints(min_length=1, max_length=SERIES_NAME_MAX, pattern=SERIES_NAME_PATTERN)]
SQL_INT_MIN, SQL_INT_MAX = -(2**63), 2**63 - 1
"""What an integer column holds (SQLite and PostgreSQL BIGINT): ids and steps from a client are bounded by it."""


class RunCreate(BaseModel):
    """A run to queue. ``spec`` is validated against the spec model of ``kind`` (see ``GET /catalog``);
    an empty spec takes every default."""

    model_config = ConfigDict(extra="forbid")

    kind: QueuedKind
    spec: dict[str, Any] = Field(default_factory=dict)
    name: StoredText = Field("", max_length=200)
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
    sha256: str = Field(description="hex SHA-256 of the bytes GET /runs/{id}/artifacts/{name} sends")
    media_type: str
    created_at: datetime


class ArtifactsPublic(BaseModel):
    data: list[ArtifactPublic]
    count: int
