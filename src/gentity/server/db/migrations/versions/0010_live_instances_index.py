"""an index of each user's live instances, in the order the list shows them

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29 23:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LIVE = sa.text("destroyed_at IS NULL")


def upgrade() -> None:
    op.create_index(
        "ix_instances_user_live",
        "instances",
        ["user_id", "created_at", "id"],
        postgresql_where=LIVE,
        sqlite_where=LIVE,
    )


def downgrade() -> None:
    op.drop_index("ix_instances_user_live", table_name="instances")
