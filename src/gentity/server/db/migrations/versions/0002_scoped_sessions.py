"""scoped child sessions (an instance's subdomain)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 11:10:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("scope_instance_id", sa.String(length=32), nullable=True))
        batch_op.create_index(batch_op.f("ix_sessions_parent_id"), ["parent_id"], unique=False)
        batch_op.create_foreign_key(
            "fk_sessions_parent_id_sessions", "sessions", ["parent_id"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_constraint("fk_sessions_parent_id_sessions", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_sessions_parent_id"))
        batch_op.drop_column("scope_instance_id")
        batch_op.drop_column("parent_id")
