"""workers.process_space: the boot and process namespace a worker's pid belongs to

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.add_column(sa.Column("process_space", sa.String(80), nullable=True))
        batch.create_index("ix_workers_process_space", ["process_space"])


def downgrade() -> None:
    with op.batch_alter_table("workers") as batch:
        batch.drop_index("ix_workers_process_space")
        batch.drop_column("process_space")
