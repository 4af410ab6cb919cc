"""an instance's encrypted env and the repository it clones

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 17:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.add_column(sa.Column("env_ciphertext", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("repo", sa.String(length=2048), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instances", schema=None) as batch_op:
        batch_op.drop_column("repo")
        batch_op.drop_column("env_ciphertext")
