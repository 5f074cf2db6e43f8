"""Run ownership: the API client a run belongs to (others neither see nor cancel it).

Runs started from the CLI, the app or an iteration have no owner (NULL) and stay visible to
every reader, as before.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.add_column(sa.Column("owner", sa.String(128), nullable=True))
        # the quota and rate checks count one owner's runs, by status and by creation time
        batch_op.create_index("ix_runs_owner_created_at", ["owner", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch_op:
        batch_op.drop_index("ix_runs_owner_created_at")
        batch_op.drop_column("owner")
