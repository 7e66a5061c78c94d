"""undelivered.redelivered_at: when an answer first lost was given after all, to a client that repeated
the request with its Idempotency-Key (service/grading.py). The mark stays, with its reason: the
record says both that the first answer was lost and that the client has it now.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    columns = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("undelivered")}
    if "redelivered_at" in columns:
        return
    with op.batch_alter_table("undelivered") as table:
        table.add_column(sa.Column("redelivered_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("undelivered") as table:
        table.drop_column("redelivered_at")
