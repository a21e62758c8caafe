"""``/runs`` endpoints: parse the request, call the service, shape the response. Nothing else.

Every route that touches the store is plain ``def`` (FastAPI runs it on its thread pool, as the FastAPI template
does), and the session dependency only makes the session on the loop and commits it on the pool
(``backend/deps.py``), so no SQLAlchemy call ever blocks the event loop, whatever the store: a PostgreSQL round
trip or SQLite's write lock stalls one thread, not every request. The one ``async def`` is the event stream, which
waits on the loop between polls and reads the store only on a worker thread (``backend/runs/events.py``).
``tests/test_event_loop.py`` holds this: it fails if any route runs SQL on the event loop.
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Literal
from urllib.parse import quote

from anyio import to_thread
from fastapi import APIRouter, Depends, Header, Path, Query, Request, status
from fastapi.responses import Response, StreamingResponse
from sse_starlette import EventSourceResponse

from anode_lab.status import RunStatus
from backend.deps import DatabaseDep, QueuesDep, SessionDep, SettingsDep, limit_creation
from backend.runs import reads, service
from backend.runs.events import parse_cursor, run_events
from backend.runs.schemas import (
    SERIES_PER_REQUEST,
    SQL_INT_MAX,
    SQL_INT_MIN,
    ArtifactsPublic,
    MetricsPublic,
    RunCreate,
    RunKind,
    RunPublic,
    RunsPublic,
    SeriesName,
    Tag,
)

router = APIRouter(prefix="/runs", tags=["runs"])
RunId = Annotated[int, Path(ge=1, le=SQL_INT_MAX)]
"""Bounded so that a huge id is a 422, not an integer overflow in the database driver (a 500)."""


@router.post("", status_code=status.HTTP_201_CREATED, dependencies=[Depends(limit_creation)])
def create_run(body: RunCreate, session: SessionDep, settings: SettingsDep, queues: QueuesDep) -> RunPublic:
    """Validate the spec of ``kind`` and queue the run (422 names every bad field)."""
    return service.create_run(session, settings, queues, body)


@router.get("")
def list_runs(
    session: SessionDep,
    settings: SettingsDep,
    status: RunStatus | None = None,
    kind: RunKind | None = None,
    tag: Annotated[Tag | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=SQL_INT_MAX)] = 0,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> RunsPublic:
    """Runs, newest first, with the number matching the filters."""
    return service.list_runs(session, settings, status=status, kind=kind, tag=tag, offset=offset, limit=limit)


@router.get("/{run_id}")
def get_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> RunPublic:
    return service.get_run(session, settings, run_id)


@router.get("/{run_id}/metrics", response_model=MetricsPublic,
            responses={200: {"content": {"text/csv": {}}, "description": "JSON, or CSV with format=csv"}})
def get_metrics(
    run_id: RunId,
    session: SessionDep,
    db: DatabaseDep,
    settings: SettingsDep,
    series: Annotated[list[SeriesName] | None, Query(max_length=SERIES_PER_REQUEST,
                                                     description="repeat to pick several; default all")] = None,
    after_step: Annotated[int | None, Query(ge=SQL_INT_MIN, le=SQL_INT_MAX,
                                            description="only points after this step (incremental polling)")] = None,
    before_step: Annotated[int | None, Query(ge=SQL_INT_MIN, le=SQL_INT_MAX,
                                             description="only points before this step (paging back)")] = None,
    points: Annotated[int | None, Query(ge=2, le=100_000, description="decimate each series to at most this "
                                        "many points, keeping each bucket's min and max")] = None,
    format: Literal["json", "csv"] = "json",
) -> MetricsPublic | Response:
    """A run's series, read from the store a page at a time: a page per series answers at once, longer JSON and
    every CSV are streamed, decimation keeps O(points) in memory."""
    stream = partial(reads.TimedStreamingResponse, send_timeout=settings.stream_send_timeout_seconds)
    if format == "csv":
        names = service.metric_names(session, run_id, series)
        return stream(reads.csv_chunks(db, run_id, names), media_type="text/csv",
                      headers={"Content-Disposition": f'attachment; filename="run-{run_id}-metrics.csv"'})
    if points is not None:
        return service.decimated_metrics(session, run_id, series=series, points=points, after_step=after_step,
                                         before_step=before_step)
    names, whole = service.metrics_block(session, run_id, series=series, after_step=after_step,
                                         before_step=before_step)
    if isinstance(whole, bytes):
        return Response(whole, media_type="application/json")
    if whole is not None:
        return whole
    return stream(reads.json_chunks(db, run_id, names, after_step=after_step, before_step=before_step),
                  media_type="application/json")


@router.get("/{run_id}/events", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "status, metrics and end events"}})
async def run_events_stream(
    run_id: RunId,
    request: Request,
    db: DatabaseDep,
    settings: SettingsDep,
    after_step: Annotated[int | None, Query(ge=SQL_INT_MIN, le=SQL_INT_MAX)] = None,
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Status changes and new metrics as Server-Sent Events; resumes after ``Last-Event-ID`` (a step). Without
    one, the first metrics event holds a recent window and ``more_before``, the step to page back from."""
    await to_thread.run_sync(service.ensure_exists, db, run_id)
    cursor = parse_cursor(last_event_id, after_step)
    window = after_step is None and cursor == -1
    return EventSourceResponse(run_events(db, settings, run_id, cursor, window=window,
                                          disconnected=request.is_disconnected),
                               ping=15, send_timeout=settings.stream_send_timeout_seconds)


@router.post("/{run_id}/cancel")
def cancel_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> RunPublic:
    """A queued run is cancelled at once; a running one ends as cancelled at its next step."""
    return service.cancel(session, settings, run_id)


@router.post("/{run_id}/rerun", status_code=status.HTTP_201_CREATED, dependencies=[Depends(limit_creation)])
def rerun(run_id: RunId, session: SessionDep, settings: SettingsDep, queues: QueuesDep) -> RunPublic:
    """Queue a new run with the same kind, spec, name and tags."""
    return service.rerun(session, settings, queues, run_id)


@router.delete("/{run_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_run(run_id: RunId, session: SessionDep, settings: SettingsDep) -> None:
    """Delete a run that is not running, with its metrics and files."""
    service.delete(session, settings, run_id)


@router.get("/{run_id}/artifacts")
def list_artifacts(run_id: RunId, session: SessionDep) -> ArtifactsPublic:
    return service.list_artifacts(session, run_id)


@router.get("/{run_id}/artifacts/{name}", response_class=StreamingResponse,
            responses={200: {"content": {media_type: {} for media_type in service.ARTIFACT_MEDIA_TYPES},
                             "description": "the file, as its type (anything else as application/octet-stream)"}})
def get_artifact(run_id: RunId, name: str, session: SessionDep, db: DatabaseDep, settings: SettingsDep) -> Response:
    """The artifact's bytes, streamed from the store (whichever worker's host wrote them)."""
    found = service.artifact_download(session, run_id, name)
    quoted = quote(found.name)
    disposition = (f'attachment; filename="{found.name}"' if quoted == found.name
                   else f"attachment; filename*=utf-8''{quoted}")
    return reads.TimedStreamingResponse(
        reads.artifact_chunks(db, run_id, found.name), send_timeout=settings.stream_send_timeout_seconds,
        media_type=found.media_type,
        headers={"Content-Length": str(found.size), "Content-Disposition": disposition, "ETag": f'"{found.sha256}"'})
