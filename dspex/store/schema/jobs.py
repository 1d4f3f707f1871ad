"""Tables of durable jobs (the seed's Oban): jobs, one row per attempt, and periodic schedules.

A job row is the whole state of a job: its kind and JSON args, its state (scheduled,
available, executing, retryable, completed, discarded, cancelled), attempt / max_attempts,
when it may run next (``scheduled_at``), who runs it (``worker``, the Ray task or submission
id) and the last heartbeat of that worker. Each attempt also gets a ``job_attempts`` row,
kept after the job finishes, so every error of every attempt survives (Oban keeps them in an
``errors`` array; a table lets ``dspex jobs show`` page through them).

``unique_key`` is a digest of (kind, args); uniqueness within a window is checked on insert
(``dspex.store.jobs``), not by a constraint, because it depends on time and state.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dspex.store.schema.base import Base, BigIntId, new_id, utcnow

__all__ = ["JobAttemptRow", "JobRow", "JobScheduleRow"]


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        # what the stager and the fetcher read: due jobs of a queue in a state, in order
        Index("ix_jobs_state_queue_scheduled_at", "state", "queue", "scheduled_at"),
        Index("ix_jobs_kind_unique_key", "kind", "unique_key"),
        Index("ix_jobs_state_heartbeat_at", "state", "heartbeat_at"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    kind: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(64), default="default")
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(default=0)
    attempt: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=20)
    unique_key: Mapped[str | None] = mapped_column(String(64))
    tags: Mapped[list[Any]] = mapped_column(default=list)
    meta: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    ray_task_id: Mapped[str | None] = mapped_column(String(100))
    submission_id: Mapped[str | None] = mapped_column(String(200))
    inserted_at: Mapped[datetime] = mapped_column(default=utcnow)
    scheduled_at: Mapped[datetime] = mapped_column(default=utcnow)
    attempted_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]
    discarded_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class JobAttemptRow(Base):
    """One attempt of a job: who ran it, when, and how it ended (with the error, if any)."""

    __tablename__ = "job_attempts"
    __table_args__ = (UniqueConstraint("job_id", "attempt", name="uq_job_attempts_job_attempt"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int]
    worker: Mapped[str | None] = mapped_column(String(200))
    ray_task_id: Mapped[str | None] = mapped_column(String(100))
    #: executing | completed | error | rescued | cancelled
    outcome: Mapped[str] = mapped_column(String(16))
    error_type: Mapped[str | None] = mapped_column(String(100))
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]


class JobScheduleRow(Base):
    """A periodic job: every ``every_s`` seconds a job of ``kind`` with ``args`` is inserted.

    ``next_run_at`` moves forward by compare-and-set, so several schedulers (one per engine)
    insert each run once."""

    __tablename__ = "job_schedules"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    kind: Mapped[str] = mapped_column(String(100))
    args: Mapped[dict[str, Any]] = mapped_column(default=dict)
    queue: Mapped[str] = mapped_column(String(64), default="default")
    priority: Mapped[int] = mapped_column(default=0)
    max_attempts: Mapped[int] = mapped_column(default=20)
    every_s: Mapped[float]
    enabled: Mapped[bool] = mapped_column(default=True)
    next_run_at: Mapped[datetime]
    last_job_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
