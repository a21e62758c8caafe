"""What the runs API does, independent of HTTP: validation, state rules, metrics shaping, artifacts.

Services raise :mod:`backend.errors` exceptions and never commit; the request's unit of work does.
"""

from __future__ import annotations

import mimetypes
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.orm import Session

from anode_lab.status import FINISHED, RunStatus
from backend.db import Database, after_commit, utcnow
from backend.errors import (
    Conflict,
    InvalidSpec,
    NotFound,
    QueueUnavailable,
    describe_errors,
)
from backend.models import Run
from backend.queue import RunQueues, queue_for_device
from backend.runs import artifacts, lifecycle, reads, repository as runs
from backend.runs.schemas import (
    ArtifactPublic,
    ArtifactsPublic,
    MetricsPublic,
    RunCreate,
    RunPublic,
    RunsPublic,
)
from backend.settings import Settings
from backend.workers import repository as workers


# ---------------------------------------------------------------------------------------------- reading runs
@dataclass(frozen=True)
class Liveness:
    """What the workers' heartbeats say right now: the device classes with a live worker, and the instant
    before which a lease is stale."""

    devices: frozenset[str]
    stale_before: datetime


def liveness(session: Session, settings: Settings) -> Liveness:
    cutoff = utcnow() - timedelta(seconds=settings.heartbeat_timeout_seconds)
    return Liveness(frozenset(workers.live_devices(session, cutoff)), cutoff)


def status_detail(run: Run, live: Liveness) -> str:
    """One line saying why a run waits, who runs it, or how it ended."""
    queue = queue_for_device(run.device)
    if run.status == RunStatus.QUEUED:
        again = f"; re-queued after attempt {run.attempt}: {run.message}" if run.attempt else ""
        if queue not in live.devices:
            return (f"waiting: no live {queue} worker; start one with `anode-lab worker --device {queue}`"
                    f"{again}")
        return f"waiting in the {queue} queue{again}"
    if run.status == RunStatus.RUNNING and run.kind == "external":
        if run.heartbeat is not None and run.heartbeat < live.stale_before:
            return (f"no word from its tracking script since {run.heartbeat:%H:%M:%S} UTC: a live worker fails it "
                    "as lost")
        return "reported by its own training script (anode_lab.track)"
    if run.status == RunStatus.RUNNING:
        if run.worker == runs.FANNED_OUT:
            note = (run.progress or {}).get("note", "")
            cancel = "; cancel requested" if run.cancel_requested else ""
            return f"fanned out over the {queue} workers: {note}{cancel}"
        if run.heartbeat is not None and run.heartbeat < live.stale_before:
            return (f"no heartbeat from {run.worker} since {run.heartbeat:%H:%M:%S} UTC: its worker is gone; "
                    "a live worker re-queues the run")
        cancel = "; cancel requested" if run.cancel_requested else ""
        return f"attempt {run.attempt} on {run.worker}{cancel}"
    if run.error:
        return f"{run.error.get('type', 'Error')}: {run.error.get('message', '')}"
    return run.message


def public(run: Run, live: Liveness) -> RunPublic:
    return RunPublic.model_validate(run).model_copy(update={"status_detail": status_detail(run, live)})


def require(session: Session, run_id: int) -> Run:
    run = runs.get(session, run_id)
    if run is None:
        raise NotFound(f"run {run_id} does not exist")
    return run


def get_run(session: Session, settings: Settings, run_id: int) -> RunPublic:
    return public(require(session, run_id), liveness(session, settings))


def list_runs(session: Session, settings: Settings, *, status: str | None, kind: str | None, tag: str | None,
              offset: int, limit: int) -> RunsPublic:
    rows, count = runs.page(session, status=status, kind=kind, tag=tag, offset=offset, limit=limit)
    live = liveness(session, settings)
    return RunsPublic(data=[public(run, live) for run in rows], count=count)


# ---------------------------------------------------------------------------------------------- changing runs
def validate_spec(kind: str, spec: dict[str, object]) -> BaseModel:
    from anode_lab.specs import parse_spec, unknown_field_message

    try:
        return parse_spec(kind, spec)
    except ValidationError as exc:
        errors: list[dict[str, Any]] = [
            {**e, "loc": ("spec", *e["loc"])} for e in exc.errors(include_url=False, include_input=False)
        ]
        errors = [{**e, "msg": unknown_field_message(kind, e["loc"][1:])} if e["type"] == "extra_forbidden" else e
                  for e in errors]
        detail, clean = describe_errors(errors)
        raise InvalidSpec(detail, errors=clean) from None


def admit_spec(settings: Settings, kind: str, spec: BaseModel) -> BaseModel:
    """``spec`` within the operator's cost limits and data folders (a root made absolute), else a 422 naming the
    estimate, the limit and the fields to lower. Every way of creating runs goes through :func:`create_run`."""
    from anode_lab.specs.cost import SpecRefused, admit

    try:
        return admit(kind, spec, settings.run_limits)
    except SpecRefused as exc:
        errors = [{"loc": ["spec", *field.split(" ")[0].split(".")], "msg": str(exc), "type": exc.error}
                  for field in exc.fields]
        raise InvalidSpec(str(exc), errors=errors) from None


def resolve_device(spec: BaseModel, devices: frozenset[str]) -> str:
    """``cuda`` or ``cpu``: ``auto`` means the gpu queue when a gpu worker is alive, else the cpu queue."""
    wanted = getattr(spec, "device", "cpu")
    if wanted == "auto":
        return "cuda" if "gpu" in devices else "cpu"
    return "cuda" if wanted == "cuda" else "cpu"


def create_run(session: Session, settings: Settings, queues: RunQueues, body: RunCreate, *,
               group_id: int | None = None) -> RunPublic:
    """Validate, admit (cost limits) and store one run, queued once the request commits; ``POST /groups`` calls
    this for each of its runs, so every rule about creating a run applies to a group's runs too."""
    spec = admit_spec(settings, body.kind, validate_spec(body.kind, body.spec))
    live = liveness(session, settings)
    run = runs.add(session, kind=body.kind, name=body.name, spec=spec.model_dump(mode="json"),
                   device=resolve_device(spec, live.devices), tags=body.tags, group_id=group_id)
    _enqueue_after_commit(session, queues, run)
    return public(run, live)


def _enqueue_after_commit(session: Session, queues: RunQueues, run: Run) -> None:
    run_id, queue = run.id, queue_for_device(run.device)

    def enqueue() -> None:
        try:
            queues.enqueue(run_id, queue)
        except Exception as exc:  # the run is stored; a starting worker re-queues stored queued runs
            raise QueueUnavailable(f"run {run_id} is stored but the {queue} queue refused it ({exc}); "
                                   "it will be queued when a worker starts") from exc

    after_commit(session, enqueue)


def requeue_stored(db: Database, queues: RunQueues) -> int:
    """Queue again every stored queued run (the API does this at start): a process killed between committing a
    new run and enqueueing it left a queued row with no message. A duplicate message is skipped by the claim."""
    with db.session() as session:
        ids = {device: runs.queued_ids(session, cuda=device == "gpu") for device in queues.hueys}
    for device, run_ids in ids.items():
        for run_id in run_ids:
            queues.enqueue(run_id, device)
    return sum(map(len, ids.values()))


def rerun(session: Session, settings: Settings, queues: RunQueues, run_id: int) -> RunPublic:
    """A new run with the same kind, spec, name and tags."""
    old = require(session, run_id)
    if old.kind == "external":
        raise Conflict(f"run {run_id} came from a training script of your own: run the script again to repeat it")
    again = RunCreate.model_validate({"kind": old.kind, "spec": old.spec, "name": old.name, "tags": old.tags})
    return create_run(session, settings, queues, again)


def cancel(session: Session, settings: Settings, run_id: int) -> RunPublic:
    """A queued run ends at once; a running one at its worker's next step."""
    run = require(session, run_id)
    if run.status in FINISHED:
        raise Conflict(f"run {run_id} already ended as {run.status}; nothing to cancel")
    if not lifecycle.cancel(session, run_id):
        raise Conflict(f"run {run_id} ended while being cancelled")
    session.refresh(run)
    return public(run, liveness(session, settings))


def delete(session: Session, settings: Settings, run_id: int) -> None:
    run = require(session, run_id)
    if run.status == RunStatus.RUNNING:
        raise Conflict(f"run {run_id} is running: cancel it first (POST /runs/{run_id}/cancel)")
    runs.delete_run(session, run)
    folder = settings.run_dir(run_id)
    after_commit(session, lambda: shutil.rmtree(folder, ignore_errors=True))


# ---------------------------------------------------------------------------------------------------- metrics
def metric_names(session: Session, run_id: int, series: Sequence[str] | None) -> list[str]:
    """The run's series (those of ``series`` it has, when given); 404 for an unknown run."""
    require(session, run_id)
    return runs.series_names(session, run_id, series)


def metrics_block(session: Session, run_id: int, *, series: Sequence[str] | None, after_step: int | None,
                  before_step: int | None) -> tuple[list[str], MetricsPublic | bytes | None]:
    """The series' names and, when they fit in one page per series, their points (on PostgreSQL as the response's
    JSON, :func:`backend.runs.reads.read_new_json`); ``None`` means: stream them
    (:func:`backend.runs.reads.json_chunks`)."""
    require(session, run_id)
    built = reads.read_new_json(session, run_id, series, after_step=after_step, before_step=before_step)
    if built is not None:
        return built
    names, block = reads.read_new(session, run_id, series, after_step=after_step, before_step=before_step)
    return names, (reads.public(run_id, block) if block.complete else None)


def decimated_metrics(session: Session, run_id: int, *, series: Sequence[str] | None, points: int,
                      after_step: int | None, before_step: int | None) -> MetricsPublic:
    names = metric_names(session, run_id, series)
    return reads.decimated(session, run_id, names, points=points, after_step=after_step, before_step=before_step)


# -------------------------------------------------------------------------------------------------- artifacts
ARTIFACT_MEDIA_TYPES = ("text/csv", "application/json", "text/plain", "image/png", "application/octet-stream")
"""What an artifact is served as (the OpenAPI contract lists them); any other type goes out as a download."""


def list_artifacts(session: Session, run_id: int) -> ArtifactsPublic:
    require(session, run_id)
    rows = artifacts.artifacts(session, run_id)
    return ArtifactsPublic(data=[ArtifactPublic.model_validate(row) for row in rows], count=len(rows))


@dataclass(frozen=True)
class ArtifactDownload:
    """What the API sends for an artifact: its bytes come from the store a chunk at a time
    (:func:`backend.runs.reads.artifact_chunks`)."""

    run_id: int
    name: str
    size: int
    sha256: str
    media_type: str


def artifact_download(session: Session, run_id: int, name: str) -> ArtifactDownload:
    """An artifact of the run, as the store keeps it; a name that is not a plain file name, or that the run has
    no artifact of, is not found."""
    require(session, run_id)
    if "\x00" in name or name in {"", ".", ".."} or Path(name).name != name:
        raise NotFound(f"artifact names are plain file names inside run {run_id}'s real folder; got {name!r}")
    row = artifacts.artifact(session, run_id, name)
    if row is None:
        raise NotFound(f"run {run_id} has no artifact {name!r} (GET /runs/{run_id}/artifacts lists them)")
    media_type = row.media_type if row.media_type in ARTIFACT_MEDIA_TYPES else "application/octet-stream"
    return ArtifactDownload(run_id, row.name, row.size, row.sha256, media_type)


MEDIA_TYPES = {".pt": "application/octet-stream", ".pth": "application/octet-stream",
               ".npz": "application/octet-stream", ".yaml": "application/yaml", ".yml": "application/yaml",
               ".csv": "text/csv", ".json": "application/json", ".png": "image/png", ".svg": "image/svg+xml",
               ".txt": "text/plain", ".log": "text/plain"}
"""The kinds of files runs write. The system's table is consulted for anything else, and it can be wrong for
ours: it lists ``.pt`` (a torch checkpoint) as ``application/vnd.snesdev-page-table``."""


def guess_media_type(name: str) -> str:
    """What a worker indexes a file as (served as one of ``ARTIFACT_MEDIA_TYPES``)."""
    return MEDIA_TYPES.get(Path(name).suffix.lower()) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def ensure_exists(db: Database, run_id: int) -> None:
    """For streams, which outlive a request's session: 404 before the stream starts."""
    with db.session() as session:
        require(session, run_id)
