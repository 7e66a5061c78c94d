"""undelivered: the mark of a committed record whose answer was not delivered (service/store.py).

A store made by `create_all` of a build between the two releases may have it already: it is then
left as it is.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    if sa.inspect(op.get_bind()).has_table("undelivered"):
        return
    op.create_table(
        "undelivered",
        sa.Column("assessment_id", sa.String(32), primary_key=True),
        sa.Column("marked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("undelivered")
