"""who asked for each status change

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 16:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Events recorded before this column existed cannot say who asked: they read as "system".
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("actor", sa.String(length=80), server_default="system", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("instance_events", schema=None) as batch_op:
        batch_op.drop_column("actor")
