"""artifacts keep their bytes in the store (artifact_chunks), with kind and sha256: no host reads another's disk

Artifacts indexed before this revision lived as files under ``<data_dir>/runs/<id>/artifacts``; those the migrating
process can read there (the API's data folder, which was shared with the workers) are moved into the store, and
the index rows of files it cannot find are dropped (their bytes were never reachable from this API).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import sqlalchemy as sa
from alembic import context, op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

CHUNK_BYTES = 1 << 20  # as backend.runs.artifacts.CHUNK_BYTES when this revision was written


def _move_files_in(data_dir: Path | None) -> None:
    conn = op.get_bind()
    artifacts = sa.table("artifacts", sa.column("run_id", sa.Integer), sa.column("name", sa.String),
                         sa.column("size", sa.BigInteger), sa.column("sha256", sa.String))
    chunks = sa.table("artifact_chunks", sa.column("run_id", sa.Integer), sa.column("name", sa.String),
                      sa.column("seq", sa.Integer), sa.column("data", sa.LargeBinary))
    for run_id, name in conn.execute(sa.select(artifacts.c.run_id, artifacts.c.name)).all():
        path = None if data_dir is None else Path(data_dir) / "runs" / str(run_id) / "artifacts" / name
        where = sa.and_(artifacts.c.run_id == run_id, artifacts.c.name == name)
        if path is None or path.is_symlink() or not path.is_file():
            conn.execute(sa.delete(artifacts).where(where))
            continue
        digest, size = hashlib.sha256(), 0
        with path.open("rb") as handle:
            for seq, data in enumerate(iter(lambda: handle.read(CHUNK_BYTES), b"")):
                digest.update(data)
                size += len(data)
                conn.execute(sa.insert(chunks).values(run_id=run_id, name=name, seq=seq, data=data))
        conn.execute(sa.update(artifacts).where(where).values(size=size, sha256=digest.hexdigest()))


def upgrade() -> None:
    with op.batch_alter_table("artifacts") as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False, server_default="artifact"))
        batch.add_column(sa.Column("sha256", sa.String(64), nullable=False, server_default=""))
        batch.alter_column("size", type_=sa.BigInteger, existing_type=sa.Integer, existing_nullable=False)
    # created after the batch above: SQLite's batch mode rebuilds ``artifacts``, and with foreign keys on, dropping
    # the old table would cascade into the chunks
    op.create_table(
        "artifact_chunks",
        sa.Column("run_id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.ForeignKeyConstraint(["run_id", "name"], ["artifacts.run_id", "artifacts.name"], ondelete="CASCADE"),
    )
    _move_files_in(context.config.attributes.get("data_dir"))
    if op.get_bind().dialect.name != "sqlite":  # SQLite would rebuild the table (see above); its default is inert
        op.alter_column("artifacts", "sha256", server_default=None)


def downgrade() -> None:
    op.drop_table("artifact_chunks")  # first: see upgrade()
    with op.batch_alter_table("artifacts") as batch:
        batch.drop_column("sha256")
        batch.drop_column("kind")
        batch.alter_column("size", type_=sa.Integer, existing_type=sa.BigInteger, existing_nullable=False)
