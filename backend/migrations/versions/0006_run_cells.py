"""run_cells: the parts of a fanned-out compare sweep, each with its own lease and rows

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from backend.db import UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_cells",
        sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("part", sa.Integer, primary_key=True),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("heartbeat", UTCDateTime(), nullable=True),
        sa.Column("rows", sa.Text, nullable=True),
    )
    op.create_index("ix_run_cells_status", "run_cells", ["status"])


def downgrade() -> None:
    op.drop_index("ix_run_cells_status", "run_cells")
    op.drop_table("run_cells")
