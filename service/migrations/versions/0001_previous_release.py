"""The tables of the release before migrations (created by its `metadata.create_all`).

assessments (the audit trail), patients, observations, treatments and idempotency_keys (episodes),
cds_cards and cds_feedback (CDS Hooks). A table already there is left as it is: a store made by a
release before that one may lack some of them, and its `create_all` would have added them.

Revision ID: 0001
Revises: (none)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    present = set(sa.inspect(op.get_bind()).get_table_names())
    if "assessments" not in present:
        op.create_table(
            "assessments",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("outcome", sa.String(32), nullable=False),
            sa.Column("request", sa.JSON, nullable=False),
            sa.Column("result", sa.JSON, nullable=True),
            sa.Column("error", sa.JSON, nullable=True),
            sa.Column("rulesets", sa.JSON, nullable=False),
            sa.Column("duration_ms", sa.Float, nullable=False),
        )
    if "patients" not in present:
        op.create_table(
            "patients",
            sa.Column("id", sa.String(64), primary_key=True),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "observations" not in present:
        op.create_table(
            "observations",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("patient_id", sa.String(64), sa.ForeignKey("patients.id"), nullable=False),
            sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("request", sa.JSON, nullable=False),
            sa.Column("assessment_id", sa.String(32), nullable=False),
            sa.Column("crs_grade", sa.Integer, nullable=True),
            sa.Column("crs_status", sa.String(32), nullable=True),
            sa.Column("icans_grade", sa.Integer, nullable=True),
            sa.Column("icans_status", sa.String(32), nullable=True),
            sa.Column("entry", sa.JSON, nullable=False),
        )
        op.create_index("ix_observations_patient_time", "observations", ["patient_id", "observed_at"])
    if "treatments" not in present:
        op.create_table(
            "treatments",
            sa.Column("id", sa.String(32), primary_key=True),
            sa.Column("patient_id", sa.String(64), sa.ForeignKey("patients.id"), nullable=False),
            sa.Column("agent", sa.String(32), nullable=False),
            sa.Column("administered_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("dose_mg", sa.Float, nullable=True),
            sa.Column("dose_unit", sa.String(16), nullable=True),
            sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_treatments_patient_time", "treatments", ["patient_id", "administered_at"])
    if "idempotency_keys" not in present:
        op.create_table(
            "idempotency_keys",
            sa.Column("patient_id", sa.String(64), sa.ForeignKey("patients.id"), primary_key=True),
            sa.Column("key", sa.String(255), primary_key=True),
            sa.Column("endpoint", sa.String(32), nullable=False),
            sa.Column("request_sha256", sa.String(64), nullable=False),
            sa.Column("response", sa.JSON, nullable=False),
            sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "cds_cards" not in present:
        op.create_table(
            "cds_cards",
            sa.Column("uuid", sa.String(36), primary_key=True),
            sa.Column("service_id", sa.String(64), nullable=False),
            sa.Column("hook", sa.String(32), nullable=False),
            sa.Column("hook_instance", sa.String(128), nullable=False),
            sa.Column("assessment_id", sa.String(32), nullable=False),
            sa.Column("indicator", sa.String(16), nullable=False),
            sa.Column("summary", sa.Text, nullable=False),
            sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        )
    if "cds_feedback" not in present:
        op.create_table(
            "cds_feedback",
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("card", sa.String(36), sa.ForeignKey("cds_cards.uuid"), nullable=False),
            sa.Column("outcome", sa.String(16), nullable=False),
            sa.Column("outcome_timestamp", sa.DateTime(timezone=True), nullable=False),
            sa.Column("override_reason", sa.JSON, nullable=True),
            sa.Column("accepted_suggestions", sa.JSON, nullable=True),
            sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        )
        op.create_index("ix_cds_feedback_card", "cds_feedback", ["card"])


def downgrade() -> None:
    for table in ("cds_feedback", "cds_cards", "idempotency_keys", "treatments", "observations", "patients", "assessments"):
        op.drop_table(table)
