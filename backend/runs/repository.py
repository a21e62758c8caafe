"""All SQL about runs, their tags and metrics (artifacts: :mod:`backend.runs.artifacts`). Functions take a
session; the caller's unit of work commits. State changes that workers race on are single conditional
``UPDATE``s, so two workers can never both own a run."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, CursorResult, Select, Update, func, select, text, union_all, update
from sqlalchemy.orm import Session, joinedload

from anode_lab.status import FINISHED, RunStatus
from backend.db import utcnow
from backend.models import Metric, Run, RunTag

if TYPE_CHECKING:
    from backend.runs.lifecycle import Lease

MetricRow = tuple[str, int, float | None]
FANNED_OUT = "(fanned out)"
"""The ``worker`` of a running sweep whose parts run as their own messages (:mod:`backend.runs.cells`): its lease
is not renewed, its parts' leases are."""


# ---------------------------------------------------------------------------------------------------- runs
def add(session: Session, *, kind: str, name: str, spec: dict[str, Any], device: str, tags: Sequence[str],
        group_id: int | None = None) -> Run:
    run = Run(kind=kind, name=name, spec=spec, device=device, status=RunStatus.QUEUED, attempt=0,
              cancel_requested=False, message="", tag_rows=[RunTag(tag=tag) for tag in sorted(set(tags))],
              group_id=group_id)
    session.add(run)
    session.flush()
    return run


def get(session: Session, run_id: int) -> Run | None:
    """The run with its tags, in one statement (a join, not the relationship's second SELECT)."""
    return session.get(Run, run_id, options=[joinedload(Run.tag_rows)])


def _filtered(status: str | None, kind: str | None, tag: str | None) -> Select[Run]:
    query = select(Run)
    if status is not None:
        query = query.where(Run.status == status)
    if kind is not None:
        query = query.where(Run.kind == kind)
    if tag is not None:
        query = query.where(Run.id.in_(select(RunTag.run_id).where(RunTag.tag == tag)))
    return query


def page(session: Session, *, status: str | None, kind: str | None, tag: str | None, offset: int,
         limit: int) -> tuple[list[Run], int]:
    """Newest first, with the number of runs matching the filters."""
    query = _filtered(status, kind, tag)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    runs = session.scalars(query.order_by(Run.id.desc()).offset(offset).limit(limit)).all()
    return list(runs), count


def delete_run(session: Session, run: Run) -> None:
    session.delete(run)
    session.flush()


def cancel_queued(session: Session, run_id: int) -> bool:
    """Cancel a run no worker holds yet; False if it was claimed meanwhile."""
    now = utcnow()
    return _changed_one(
        session,
        update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(status=RunStatus.CANCELLED, cancel_requested=True, finished_at=now, updated_at=now,
                message="cancelled before it started")
    )


def request_cancel(session: Session, run_id: int) -> bool:
    """Raise the cancel flag of a running run; its worker ends it at the next step."""
    return _changed_one(
        session,
        update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
        .values(cancel_requested=True, updated_at=utcnow())
    )


def cancel_requested(conn: Session | Connection, run_id: int) -> bool:
    return bool(conn.scalar(select(Run.cancel_requested).where(Run.id == run_id)))


def claim(session: Session, run_id: int, worker: str, device: str) -> int | None:
    """Take a queued run for ``worker``: the one way a run becomes running, so duplicates of a queue message
    and runs finished or deleted meanwhile are skipped. Returns the new attempt number (the claim's lease), or
    ``None`` when the run was not queued."""
    now = utcnow()
    taken = _changed_one(
        session,
        update(Run).where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(status=RunStatus.RUNNING, worker=worker, device=device, attempt=Run.attempt + 1, heartbeat=now,
                started_at=func.coalesce(Run.started_at, now), updated_at=now, error=None)
    )
    return session.scalar(select(Run.attempt).where(Run.id == run_id)) if taken else None


def _held(lease: Lease) -> Update:
    """``UPDATE`` of the run ``lease`` holds: running, by that worker, in that attempt."""
    return update(Run).where(Run.id == lease.run_id, Run.status == RunStatus.RUNNING, Run.worker == lease.worker,
                             Run.attempt == lease.attempt)


def renew(session: Session, lease: Lease, progress: Mapping[str, Any] | None = None) -> bool:
    """Renew ``lease`` (and store ``progress``); False when it was lost (reaped, deleted, finished). The row
    stays locked until the caller commits, so nothing can take the run between this check and the caller's
    other writes in the same unit of work."""
    values: dict[str, Any] = {"heartbeat": utcnow()}
    if progress is not None:
        values["progress"] = dict(progress)
    return _changed_one(session, _held(lease).values(**values))


def finish(session: Session, lease: Lease, *, status: str, summary: Mapping[str, Any] | None = None,
           message: str = "", error: Mapping[str, Any] | None = None,
           progress: Mapping[str, Any] | None = None) -> bool:
    """End the run ``lease`` holds; False if the lease was lost (a reaped worker must not overwrite)."""
    now = utcnow()
    values: dict[str, Any] = {"status": status, "finished_at": now, "updated_at": now, "heartbeat": now,
                              "summary": dict(summary) if summary is not None else None, "message": message,
                              "error": dict(error) if error is not None else None}
    if progress is not None:
        values["progress"] = dict(progress)
    return _changed_one(session, _held(lease).values(**values))


def release(session: Session, lease: Lease, message: str) -> bool:
    """Give the run ``lease`` holds back to the queue (worker shutting down); it resumes from its checkpoint. The
    attempt is not counted: only lost workers use up retries."""
    return _changed_one(
        session,
        _held(lease).values(status=RunStatus.QUEUED, worker=None, attempt=Run.attempt - 1, updated_at=utcnow(),
                            message=message)
    )


def stale(session: Session, cutoff: datetime, *, kind: str | None) -> list[tuple[int, int, str]]:
    """``(id, attempt, device)`` of running runs whose lease is older than ``cutoff``: a worker's (``kind=None``),
    else those of ``kind`` (``external``: a tracker's)."""
    query = select(Run.id, Run.attempt, Run.device).where(Run.status == RunStatus.RUNNING, Run.heartbeat < cutoff,
                                                          Run.worker != FANNED_OUT)  # its parts' leases count
    query = query.where(Run.kind != "external") if kind is None else query.where(Run.kind == kind)
    return [(row.id, row.attempt, row.device) for row in session.execute(query)]


def held_by(session: Session, worker: str) -> list[tuple[int, int, str]]:
    """``(id, attempt, device)`` of the running runs ``worker`` holds."""
    rows = session.execute(
        select(Run.id, Run.attempt, Run.device).where(Run.status == RunStatus.RUNNING, Run.worker == worker)
    )
    return [(row.id, row.attempt, row.device) for row in rows]


def _lost(run_id: int, cutoff: datetime | None, worker: str | None) -> Update:
    """``UPDATE`` of a running run whose lease is older than ``cutoff`` or whose holder is ``worker`` (dead)."""
    statement = update(Run).where(Run.id == run_id, Run.status == RunStatus.RUNNING)
    if cutoff is not None:
        statement = statement.where(Run.heartbeat < cutoff)
    if worker is not None:
        statement = statement.where(Run.worker == worker)
    return statement


def requeue_lost(session: Session, run_id: int, message: str, *, cutoff: datetime | None = None,
                 worker: str | None = None) -> bool:
    return _changed_one(session, _lost(run_id, cutoff, worker).values(status=RunStatus.QUEUED, worker=None,
                                                                      updated_at=utcnow(), message=message))


def fail_lost(session: Session, run_id: int, error: Mapping[str, Any], *, cutoff: datetime | None = None,
              worker: str | None = None) -> bool:
    now = utcnow()
    return _changed_one(
        session,
        _lost(run_id, cutoff, worker).values(status=RunStatus.FAILED, worker=None, finished_at=now, updated_at=now,
                                             error=dict(error), message=str(error.get("message", "")))
    )


def _changed_one(session: Session, statement: Update) -> bool:
    """Execute a conditional ``UPDATE``: True when it changed exactly one row (the compare-and-set won)."""
    result = session.execute(statement)
    # An UPDATE's result is a CursorResult, which holds the row count; Session.execute is typed for any statement.
    return cast(CursorResult[Any], result).rowcount == 1


# ------------------------------------------------------------------------------------------------- metrics
_UPSERT = ("INSERT INTO metrics (run_id, series, step, value) VALUES ({p}, {p}, {p}, {p}) "
           "ON CONFLICT (run_id, series, step) DO UPDATE SET value = excluded.value")
PLACEHOLDERS = {"qmark": "?", "format": "%s", "pyformat": "%s"}
_UPSERT_ARRAYS = ("INSERT INTO metrics (run_id, series, step, value) SELECT %s, * FROM "
                  "unnest(%s::text[], %s::integer[], %s::float8[]) "
                  "ON CONFLICT (run_id, series, step) DO UPDATE SET value = excluded.value")


def upsert_metrics(session: Session, run_id: int, rows: Iterable[MetricRow]) -> int:
    """Write ``(series, step, value)`` rows; a step reported again replaces its value (idempotent retries). A key
    repeated within ``rows`` keeps its last value. On PostgreSQL one statement over three arrays (``unnest``): a
    worker's flush of 700 points costs the database about half the CPU of one upsert per row, and the worker a
    quarter; on SQLite one DB-API ``executemany`` (a third of the ORM's cost per row)."""
    unique = {(series, step): value for series, step, value in rows}
    if not unique:
        return 0
    dialect = session.get_bind().dialect
    placeholder = PLACEHOLDERS.get(dialect.paramstyle)
    if dialect.name not in ("sqlite", "postgresql") or placeholder is None:
        raise NotImplementedError(f"metrics upsert needs SQLite or PostgreSQL; got {dialect.name} "
                                  f"({dialect.paramstyle})")
    if dialect.name == "postgresql":
        session.connection().exec_driver_sql(_UPSERT_ARRAYS, (
            run_id, [series for series, _ in unique], [step for _, step in unique],
            [None if value is None else float(value) for value in unique.values()]))
    else:
        session.connection().exec_driver_sql(
            _UPSERT.format(p=placeholder), [(run_id, series, step, value) for (series, step), value in unique.items()])
    return len(unique)


def read_metrics(session: Session, run_id: int, *, series: Sequence[str] | None = None,
                 after_step: int | None = None) -> list[MetricRow]:
    """Rows ordered by series then step."""
    query = select(Metric.series, Metric.step, Metric.value).where(Metric.run_id == run_id)
    if series:
        query = query.where(Metric.series.in_(series))
    if after_step is not None:
        query = query.where(Metric.step > after_step)
    rows = session.execute(query.order_by(Metric.series, Metric.step))
    return [(row.series, row.step, row.value) for row in rows]


def last_step(session: Session, run_id: int) -> int | None:
    return session.scalar(select(func.max(Metric.step)).where(Metric.run_id == run_id))


def series_names(session: Session, run_id: int, wanted: Sequence[str] | None = None) -> list[str]:
    """The run's series names, sorted: one index seek per name (a recursive CTE jumping to the next name), not a
    scan of every row; SQLite and PostgreSQL alike."""
    rows = session.execute(text(
        "WITH RECURSIVE names(name) AS ("
        " SELECT MIN(series) FROM metrics WHERE run_id = :run"
        " UNION ALL SELECT (SELECT MIN(series) FROM metrics WHERE run_id = :run AND series > names.name)"
        " FROM names WHERE names.name IS NOT NULL)"
        " SELECT name FROM names WHERE name IS NOT NULL"), {"run": run_id})
    names = [row.name for row in rows]
    return [name for name in names if name in set(wanted)] if wanted else names


def series_page(session: Session, run_id: int, series: str, *, after_step: int | None, before_step: int | None,
                limit: int, newest: bool = False) -> list[tuple[int, float | None]]:
    """Up to ``limit`` ``(step, value)`` of one series with ``after_step < step < before_step``, by step (newest
    first with ``newest``): a keyset page read along the primary key, however long the history."""
    query = select(Metric.step, Metric.value).where(Metric.run_id == run_id, Metric.series == series)
    if after_step is not None:
        query = query.where(Metric.step > after_step)
    if before_step is not None:
        query = query.where(Metric.step < before_step)
    order = Metric.step.desc() if newest else Metric.step
    return [(row.step, row.value) for row in session.execute(query.order_by(order).limit(limit))]


def series_pages(session: Session, run_id: int, names: Sequence[str], *, after_step: int | None,
                 before_step: int | None, limit: int) -> dict[str, list[tuple[int, float | None]]]:
    """:func:`series_page` of several series in one statement (a UNION ALL of keyset pages), so all of them come
    from one snapshot: under PostgreSQL's READ COMMITTED, one statement per series could see a batch committed
    between two of them, and a cursor past it would skip its points of the series read first."""
    if not names:
        return {}
    pages = []
    for name in names:
        query = select(Metric.series, Metric.step, Metric.value).where(Metric.run_id == run_id, Metric.series == name)
        if after_step is not None:
            query = query.where(Metric.step > after_step)
        if before_step is not None:
            query = query.where(Metric.step < before_step)
        pages.append(select(query.order_by(Metric.step).limit(limit).subquery()))
    out: dict[str, list[tuple[int, float | None]]] = {name: [] for name in names}
    for series, step, value in session.execute(union_all(*pages)).all():  # fetched at once, then unpacked
        out[series].append((step, value))
    for page in out.values():
        page.sort(key=itemgetter(0))
    return out


def series_pages_json(session: Session, run_id: int, names: Sequence[str], *, after_step: int | None,
                      before_step: int | None, limit: int) -> dict[str, tuple[int, int, str, str]]:
    """PostgreSQL only: :func:`series_pages` with each page built into JSON by the database, ``{series: (points,
    last step, steps as a JSON array, values as a JSON array)}`` for the series with points, in one statement (a
    keyset page per name, joined laterally, each aggregated in its own subquery: no grouping over all of them,
    4.3 against 6.2 ms of the database's time for 7,000 points). A page of thousands of points then crosses into
    Python as two strings instead of thousands of rows: a live run's poll costs the API about a twentieth of the
    CPU. PostgreSQL 12 and newer write a float8 in the shortest form that reads back to the same value, as Python's
    ``json`` does; SQLite's JSON keeps 15 digits, so it has no such path. Text, not :func:`series_pages`' Core
    form: building and caching that statement for a read cost the API 2.5 ms of CPU against this one's 0.6 ms."""
    if not names:
        return {}
    bounds = "".join((" AND step > :after" if after_step is not None else "",
                      " AND step < :before" if before_step is not None else ""))
    query = text(
        "SELECT n.series, a.points, a.last, a.steps, a.vals FROM unnest(CAST(:names AS text[])) AS n(series)"
        " CROSS JOIN LATERAL (SELECT count(*) AS points, max(step) AS last,"
        " json_agg(step ORDER BY step)::text AS steps, json_agg(value ORDER BY step)::text AS vals"
        " FROM (SELECT step, value FROM metrics WHERE run_id = :run"
        f" AND series = n.series{bounds} ORDER BY step LIMIT :limit) AS p) AS a WHERE a.points > 0")
    rows = session.execute(query, {"names": list(names), "run": run_id, "after": after_step, "before": before_step,
                                   "limit": limit})
    return {series: (points, last, steps, values) for series, points, last, steps, values in rows.all()}


def series_count(session: Session, run_id: int, series: str, *, after_step: int | None,
                 before_step: int | None) -> int:
    query = select(func.count()).where(Metric.run_id == run_id, Metric.series == series)
    if after_step is not None:
        query = query.where(Metric.step > after_step)
    if before_step is not None:
        query = query.where(Metric.step < before_step)
    return int(session.scalar(query) or 0)


def nth_latest_step(session: Session, run_id: int, series: str, n: int) -> int | None:
    """The step of the ``n``-th newest point of a series (``None`` when it has fewer): where a window of its ``n``
    most recent points begins."""
    return session.scalar(select(Metric.step).where(Metric.run_id == run_id, Metric.series == series)
                          .order_by(Metric.step.desc()).offset(n - 1).limit(1))


def unfinished_among(session: Session, ids: Sequence[int]) -> set[int]:
    """Those of ``ids`` whose run exists and has not ended."""
    return set(session.scalars(select(Run.id).where(Run.id.in_(ids), Run.status.not_in(FINISHED))))


def queued_ids(session: Session, *, cuda: bool) -> list[int]:
    """Queued runs of one queue (``cuda`` runs or the others), oldest first."""
    device = Run.device == "cuda" if cuda else Run.device != "cuda"
    return list(session.scalars(select(Run.id).where(Run.status == RunStatus.QUEUED, device).order_by(Run.id)))
