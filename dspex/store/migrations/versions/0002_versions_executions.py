"""Prices per 1M input / output tokens, program versions with aliases and tags, the execution log.

The seed's single ``cost_per_token`` becomes ``input_price_per_1m_usd`` and
``output_price_per_1m_usd`` (both set from the old price, so no model loses its price), and
``program_models.total_cost`` becomes ``total_cost_usd``. Program versions are made immutable
by a trigger.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

IMMUTABLE_MESSAGE = "program versions are immutable; save a new version instead"


def upgrade() -> None:
    # -- models: the price per token becomes prices per 1M input and output tokens ------------
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("input_price_per_1m_usd", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("output_price_per_1m_usd", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("status_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("last_call_at", TS, nullable=True))
    op.execute(
        "UPDATE models SET input_price_per_1m_usd = cost_per_token * 1000000, "
        "output_price_per_1m_usd = cost_per_token * 1000000"
    )
    with op.batch_alter_table("models") as batch:
        batch.drop_column("cost_per_token")

    with op.batch_alter_table("program_models") as batch:
        batch.add_column(sa.Column("total_cost_usd", sa.Float(), nullable=False, server_default="0"))
    op.execute("UPDATE program_models SET total_cost_usd = total_cost")
    with op.batch_alter_table("program_models") as batch:
        batch.drop_column("total_cost")

    # -- program versions, tags, aliases and the aliases' audit trail -------------------------
    op.create_table(
        "program_versions",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("program_id", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("state", JSON, nullable=False),
        sa.Column("signature_hashes", JSON, nullable=False),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("created_by", sa.String(200), nullable=True),
        sa.Column("trainset_hash", sa.String(128), nullable=True),
        sa.Column("notes", JSON, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_program_versions"),
        sa.UniqueConstraint("program_id", "version", name="uq_program_versions_program_version"),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name="fk_program_versions_program_id_programs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_program_versions_program_id", "program_versions", ["program_id"])
    op.create_table(
        "program_version_tags",
        sa.Column("version_id", sa.String(32), nullable=False),
        sa.Column("tag", sa.String(64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("version_id", "tag", name="pk_program_version_tags"),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["program_versions.id"],
            name="fk_program_version_tags_version_id_program_versions",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "program_aliases",
        sa.Column("program_id", sa.String(32), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("version_id", sa.String(32), nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("program_id", "alias", name="pk_program_aliases"),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name="fk_program_aliases_program_id_programs", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["program_versions.id"],
            name="fk_program_aliases_version_id_program_versions",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_program_aliases_version_id", "program_aliases", ["version_id"])
    op.create_table(
        "program_alias_events",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("program_id", sa.String(32), nullable=False),
        sa.Column("alias", sa.String(64), nullable=False),
        sa.Column("from_version_id", sa.String(32), nullable=True),
        sa.Column("to_version_id", sa.String(32), nullable=True),
        sa.Column("actor", sa.String(200), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_program_alias_events"),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name="fk_program_alias_events_program_id_programs", ondelete="CASCADE"
        ),
    )
    op.create_index(
        "ix_program_alias_events_program_alias", "program_alias_events", ["program_id", "alias", "id"]
    )

    # -- the execution log -----------------------------------------------------------------
    op.create_table(
        "executions",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("program", sa.String(200), nullable=True),
        sa.Column("version_id", sa.String(32), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("model_id", sa.String(32), nullable=True),
        sa.Column("assignment_id", sa.String(32), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(64), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=False),
        sa.Column("hop", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_executions"),
    )
    op.create_index("ix_executions_program_created_at", "executions", ["program", "created_at"])
    op.create_index("ix_executions_model_created_at", "executions", ["model", "created_at"])

    # -- versions are immutable: the database refuses an UPDATE ------------------------------
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION dspex_program_versions_immutable() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{IMMUTABLE_MESSAGE}'; END $$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER trg_program_versions_immutable BEFORE UPDATE ON program_versions "
            "FOR EACH ROW EXECUTE FUNCTION dspex_program_versions_immutable()"
        )
    else:
        op.execute(
            "CREATE TRIGGER trg_program_versions_immutable BEFORE UPDATE ON program_versions "
            f"BEGIN SELECT RAISE(ABORT, '{IMMUTABLE_MESSAGE}'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS trg_program_versions_immutable ON program_versions")
        op.execute("DROP FUNCTION IF EXISTS dspex_program_versions_immutable()")
    op.drop_table("executions")
    op.drop_table("program_alias_events")
    op.drop_table("program_aliases")
    op.drop_table("program_version_tags")
    op.drop_table("program_versions")
    with op.batch_alter_table("program_models") as batch:
        batch.add_column(sa.Column("total_cost", sa.Numeric(20, 8), nullable=False, server_default="0"))
    op.execute("UPDATE program_models SET total_cost = total_cost_usd")
    with op.batch_alter_table("program_models") as batch:
        batch.drop_column("total_cost_usd")
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("cost_per_token", sa.Numeric(20, 12), nullable=False, server_default="0"))
    op.execute("UPDATE models SET cost_per_token = input_price_per_1m_usd / 1000000")
    with op.batch_alter_table("models") as batch:
        batch.drop_column("input_price_per_1m_usd")
        batch.drop_column("output_price_per_1m_usd")
        batch.drop_column("status_reason")
        batch.drop_column("last_call_at")
