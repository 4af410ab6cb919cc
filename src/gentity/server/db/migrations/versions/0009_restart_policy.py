"""an instance's restart policy and the automatic restarts of its machine

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 19:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "restart_policy", sa.String(length=16), nullable=False, server_default="always"
            )
        )
        batch_op.add_column(
            sa.Column("recovery_attempts", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("recover_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("recover_at")
        batch_op.drop_column("recovery_attempts")
        batch_op.drop_column("restart_policy")
