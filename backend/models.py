"""Tables. ``runs`` is the source of truth for a run's state; the queue only carries run ids."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from anode_lab.status import RunStatus
from backend.db import UTCDateTime, utcnow

ARTIFACT, CHECKPOINT = "artifact", "checkpoint"
"""The kinds of :class:`Artifact`."""


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Run(Base):
    __tablename__ = "runs"
    __table_args__ = {"sqlite_autoincrement": True}  # ids are never reused, so a deleted run's URL stays dead

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    spec: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(String(16), index=True, default=RunStatus.QUEUED)
    """A :class:`~anode_lab.status.RunStatus` value (stored as its text: a new state needs no migration)."""
    device: Mapped[str] = mapped_column(String(8), default="cpu")
    """Device the run executes on, ``cpu`` or ``cuda``; ``cuda`` runs go to the gpu queue."""
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    """How many times a worker has claimed the run."""
    worker: Mapped[str | None] = mapped_column(String(200))
    heartbeat: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    """Changes with every state change (not with heartbeats): event streams watch it."""
    progress: Mapped[dict[str, Any] | None]
    summary: Mapped[dict[str, Any] | None]
    message: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[dict[str, Any] | None]
    group_id: Mapped[int | None] = mapped_column(ForeignKey("groups.id", ondelete="SET NULL"), index=True)
    """The side-by-side group the run was created in (``POST /groups``), if any."""

    tag_rows: Mapped[list[RunTag]] = relationship(
        cascade="all, delete-orphan", passive_deletes=True, lazy="selectin", order_by="RunTag.tag"
    )

    @property
    def tags(self) -> list[str]:
        return [row.tag for row in self.tag_rows]


class Group(Base):
    """Runs created together, identical but for the gradient method: the compare page overlays them."""

    __tablename__ = "groups"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class RunTag(Base):
    __tablename__ = "run_tags"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)


class Metric(Base):
    """One value of one series at one step; the key makes a re-reported step an update, never a duplicate."""

    __tablename__ = "metrics"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    series: Mapped[str] = mapped_column(String(64), primary_key=True)
    step: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)
    """``None`` for a non-finite value (NaN, ±inf: a diverged run)."""


class Artifact(Base):
    """A file a run wrote, kept in the store with its bytes (:class:`ArtifactChunk`), so that no host needs
    another's disk: an ``artifact`` (written when the run ends, served by the API) or the run's latest
    ``checkpoint`` (named by its path in the run's folder, ``checkpoints/step-….pt``; a worker on any host resumes
    from it, and the run's end removes it)."""

    __tablename__ = "artifacts"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), default=ARTIFACT, server_default=ARTIFACT)
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    media_type: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ArtifactChunk(Base):
    """One piece of an artifact's bytes (:data:`~backend.runs.artifacts.CHUNK_BYTES` each, the last one shorter):
    written and read a piece at a time, so neither a worker nor the API holds a whole checkpoint in memory, and
    no column nears a database's limit on one value (1 GB for PostgreSQL's ``bytea``)."""

    __tablename__ = "artifact_chunks"
    __table_args__ = (ForeignKeyConstraint(["run_id", "name"], ["artifacts.run_id", "artifacts.name"],
                                           ondelete="CASCADE"),)

    run_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Worker(Base):
    """A live worker process renews its row every heartbeat; /health lists the fresh ones."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    device: Mapped[str] = mapped_column(String(8), index=True)
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    process_space: Mapped[str | None] = mapped_column(String(80), index=True)
    """Where ``pid`` means something: this boot of this machine and its process namespace (``None`` where that cannot
    be told); a worker checks the pids of the workers in its own space only."""
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    run_id: Mapped[int | None] = mapped_column(Integer)
    device_name: Mapped[str] = mapped_column(String(200), default="")
    device_memory: Mapped[int | None] = mapped_column(BigInteger)
    """Bytes: the GPU's total memory for a gpu worker, the host's RAM for a cpu worker."""
    problem: Mapped[str | None] = mapped_column(Text)
    """Why this worker cannot run experiments (its start-up check failed), or None."""


class RunCell(Base):
    """One part of a fanned-out compare sweep (the cells of one setting, :func:`anode_lab.experiments.sweep.parts`):
    its own queue message and lease, the rows it measured. The sweep stays one run: the run's progress counts
    the cells of done parts, and the worker that concludes the last part writes the run's tables."""

    __tablename__ = "run_cells"

    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True)
    size: Mapped[int] = mapped_column(Integer)
    """How many grid cells the part holds."""
    status: Mapped[str] = mapped_column(String(16), index=True, default=RunStatus.QUEUED)
    worker: Mapped[str | None] = mapped_column(String(200))
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    heartbeat: Mapped[datetime | None]
    rows: Mapped[str | None] = mapped_column(Text)
    """The part's ``results.csv`` rows as JSON text (NaN allowed, which a JSON column on PostgreSQL refuses)."""
