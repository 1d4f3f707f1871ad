"""The registry as the Stage 4 seed had it: models, programs, program<->model assignments.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("provider", sa.String(32), nullable=False),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("base_url", sa.String(500), nullable=True),
        sa.Column("secret_ref", sa.String(128), nullable=True),
        sa.Column("config", JSON, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        # the seed's single price, replaced by input/output prices per 1M tokens in 0002
        sa.Column("cost_per_token", sa.Numeric(20, 12), nullable=False, server_default="0"),
        sa.Column("max_tokens", sa.Integer(), nullable=True),
        sa.Column("context_window", sa.Integer(), nullable=True),
        sa.Column("supports_functions", sa.Boolean(), nullable=False),
        sa.Column("supports_streaming", sa.Boolean(), nullable=False),
        sa.Column("average_latency_ms", sa.Float(), nullable=True),
        sa.Column("success_rate", sa.Float(), nullable=True),
        sa.Column("last_health_check", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_models"),
        sa.UniqueConstraint("name", name="uq_models_name"),
    )
    op.create_table(
        "programs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_programs"),
        sa.UniqueConstraint("name", name="uq_programs_name"),
    )
    op.create_table(
        "program_models",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("program_id", sa.String(32), nullable=False),
        sa.Column("model_id", sa.String(32), nullable=False),
        sa.Column("routing_strategy", sa.String(24), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Integer(), nullable=False),
        sa.Column("conditions", JSON, nullable=False),
        sa.Column("total_requests", sa.BigInteger(), nullable=False),
        sa.Column("successful_requests", sa.BigInteger(), nullable=False),
        sa.Column("total_cost", sa.Numeric(20, 8), nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_program_models"),
        sa.UniqueConstraint("program_id", "model_id", name="uq_program_models_program_model"),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name="fk_program_models_program_id_programs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["model_id"], ["models.id"], name="fk_program_models_model_id_models", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_program_models_program_id", "program_models", ["program_id"])
    op.create_index("ix_program_models_model_id", "program_models", ["model_id"])


def downgrade() -> None:
    op.drop_table("program_models")
    op.drop_table("programs")
    op.drop_table("models")
