"""All SQL about the files a run keeps in the store: its artifacts and its latest checkpoint, each an
:class:`~backend.models.Artifact` row with its bytes in :class:`~backend.models.ArtifactChunk` pieces.

Workers write them (under the run's lease, :class:`backend.runs.lifecycle.Hold`), the API reads them: with
several hosts no one reads another's disk. A file is written and read a chunk at a time, so memory stays
:data:`CHUNK_BYTES` whatever its size. Functions take a session; the caller's unit of work commits.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from backend.models import ARTIFACT, CHECKPOINT, Artifact, ArtifactChunk

CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class LocalFile:
    """A file of a run's folder to keep in the store: ``name`` (the artifact's name, or a checkpoint's path
    in the folder), where it is, and the media type it is served as."""

    name: str
    path: Path
    media_type: str = "application/octet-stream"


def store(session: Session, run_id: int, file: LocalFile, kind: str = ARTIFACT) -> Artifact:
    """Copy ``file`` into the store as ``kind`` (replacing a file of that name), a chunk at a time."""
    session.execute(delete(Artifact).where(Artifact.run_id == run_id, Artifact.name == file.name))
    row = Artifact(run_id=run_id, name=file.name, kind=kind, size=0, sha256="", media_type=file.media_type)
    session.add(row)
    session.flush()
    digest = hashlib.sha256()
    with file.path.open("rb") as handle:
        for seq, data in enumerate(iter(lambda: handle.read(CHUNK_BYTES), b"")):
            digest.update(data)
            row.size += len(data)
            session.add(ArtifactChunk(run_id=run_id, name=file.name, seq=seq, data=data))
            session.flush()  # one chunk in memory at a time
    row.sha256 = digest.hexdigest()
    return row


def remove(session: Session, run_id: int, kind: str | None = None) -> None:
    """Remove the run's stored files (of ``kind`` only, when given); their chunks go with them."""
    query = delete(Artifact).where(Artifact.run_id == run_id)
    session.execute(query if kind is None else query.where(Artifact.kind == kind))


def artifacts(session: Session, run_id: int) -> list[Artifact]:
    """The run's artifacts (not its checkpoint), by name."""
    return list(session.scalars(select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == ARTIFACT)
                                .order_by(Artifact.name)))


def artifact(session: Session, run_id: int, name: str) -> Artifact | None:
    row = session.get(Artifact, (run_id, name))
    return row if row is not None and row.kind == ARTIFACT else None


def checkpoint(session: Session, run_id: int) -> Artifact | None:
    """The run's latest checkpoint in the store, if it has one."""
    return session.scalars(select(Artifact).where(Artifact.run_id == run_id, Artifact.kind == CHECKPOINT)
                           .order_by(Artifact.created_at.desc()).limit(1)).first()


def chunk(session: Session, run_id: int, name: str, seq: int) -> bytes | None:
    """Piece ``seq`` of a stored file (``None`` past its end, or once the file is gone)."""
    return session.scalar(select(ArtifactChunk.data).where(ArtifactChunk.run_id == run_id,
                                                           ArtifactChunk.name == name, ArtifactChunk.seq == seq))


def copy_out(session: Session, row: Artifact, path: Path) -> None:
    """Write a stored file to ``path`` (through a temporary file, renamed once its digest matches)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as handle:
            seq = 0
            while (data := chunk(session, row.run_id, row.name, seq)) is not None:
                digest.update(data)
                handle.write(data)
                seq += 1
        if digest.hexdigest() != row.sha256:
            raise OSError(f"run {row.run_id}'s stored {row.name} does not match its sha256 (changed while read?)")
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
