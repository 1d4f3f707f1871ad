"""Durable jobs (jobs, job attempts, periodic schedules), experiments, and the deployment side:
deployment pipelines, deployments and rollout states.

Only new tables: nothing existing is altered, so no data can be lost by this revision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TS = sa.DateTime(timezone=True)
BIGID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, TS, nullable=nullable)


def upgrade() -> None:
    # -- durable jobs ------------------------------------------------------------------------
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("args", JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("unique_key", sa.String(64), nullable=True),
        sa.Column("tags", JSON, nullable=False),
        sa.Column("meta", JSON, nullable=False),
        sa.Column("result", JSON, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("ray_task_id", sa.String(100), nullable=True),
        sa.Column("submission_id", sa.String(200), nullable=True),
        _ts("inserted_at"),
        _ts("scheduled_at"),
        _ts("attempted_at", True),
        _ts("heartbeat_at", True),
        _ts("completed_at", True),
        _ts("cancelled_at", True),
        _ts("discarded_at", True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_state_queue_scheduled_at", "jobs", ["state", "queue", "scheduled_at"])
    op.create_index("ix_jobs_kind_unique_key", "jobs", ["kind", "unique_key"])
    op.create_index("ix_jobs_state_heartbeat_at", "jobs", ["state", "heartbeat_at"])

    op.create_table(
        "job_attempts",
        sa.Column("id", BIGID, autoincrement=True, nullable=False),
        sa.Column("job_id", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(200), nullable=True),
        sa.Column("ray_task_id", sa.String(100), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("error_type", sa.String(100), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("traceback", sa.Text(), nullable=True),
        _ts("started_at"),
        _ts("finished_at", True),
        sa.PrimaryKeyConstraint("id", name="pk_job_attempts"),
        sa.UniqueConstraint("job_id", "attempt", name="uq_job_attempts_job_attempt"),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name="fk_job_attempts_job_id_jobs", ondelete="CASCADE"
        ),
    )
    op.create_index("ix_job_attempts_job_id", "job_attempts", ["job_id"])

    op.create_table(
        "job_schedules",
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(100), nullable=False),
        sa.Column("args", JSON, nullable=False),
        sa.Column("queue", sa.String(64), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("every_s", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _ts("next_run_at"),
        sa.Column("last_job_id", sa.String(32), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("name", name="pk_job_schedules"),
    )

    # -- experiments -------------------------------------------------------------------------
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("arms", JSON, nullable=False),
        sa.Column("result", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("started_at", True),
        _ts("finished_at", True),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_experiments"),
    )
    op.create_index("ix_experiments_name", "experiments", ["name"])
    op.create_index("ix_experiments_status_created_at", "experiments", ["status", "created_at"])

    # -- deployment pipelines, deployments, rollout states ---------------------------------
    op.create_table(
        "deployment_pipelines",
        sa.Column("id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("program", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("doc", JSON, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_pipelines"),
        sa.UniqueConstraint("name", name="uq_deployment_pipelines_name"),
    )
    op.create_index("ix_deployment_pipelines_program", "deployment_pipelines", ["program"])

    op.create_table(
        "deployments",
        sa.Column("id", sa.String(200), nullable=False),
        sa.Column("program", sa.String(200), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("pipeline", sa.String(200), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("doc", JSON, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_deployments"),
    )
    op.create_index("ix_deployments_program_status", "deployments", ["program", "status"])
    op.create_index("ix_deployments_pipeline", "deployments", ["pipeline"])

    op.create_table(
        "rollout_states",
        sa.Column("rollout_id", sa.String(255), nullable=False),
        sa.Column("deployment_id", sa.String(200), nullable=True),
        sa.Column("program", sa.String(200), nullable=False),
        sa.Column("canary", sa.Integer(), nullable=False),
        sa.Column("champion", sa.Integer(), nullable=True),
        sa.Column("phase", sa.String(32), nullable=False),
        sa.Column("terminal", sa.Boolean(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("weight", sa.Float(), nullable=False),
        sa.Column("failed_checks", sa.Integer(), nullable=False),
        sa.Column("doc", JSON, nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        _ts("created_at"),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("rollout_id", name="pk_rollout_states"),
    )
    op.create_index("ix_rollout_states_program_terminal", "rollout_states", ["program", "terminal"])
    op.create_index("ix_rollout_states_deployment_id", "rollout_states", ["deployment_id"])


def downgrade() -> None:
    for table in (
        "rollout_states",
        "deployments",
        "deployment_pipelines",
        "experiments",
        "job_schedules",
        "job_attempts",
        "jobs",
    ):
        op.drop_table(table)
