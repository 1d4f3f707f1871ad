"""The execution log: one row per LM call attempt made through the router (or any caller
of ``ExecutionLog``). Written in batches off the hot path; rows are never updated.

Columns name the program, version and model by name as well as id, so the log stays readable
after a model or program is deleted (there are deliberately no foreign keys: a log write must
never fail because of what was deleted meanwhile).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from dspex.store.schema.base import Base, BigIntId, utcnow

__all__ = ["ExecutionRow"]


class ExecutionRow(Base):
    __tablename__ = "executions"
    __table_args__ = (
        Index("ix_executions_program_created_at", "program", "created_at"),
        Index("ix_executions_model_created_at", "model", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    program: Mapped[str | None] = mapped_column(String(200))
    version_id: Mapped[str | None] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(200))
    model_id: Mapped[str | None] = mapped_column(String(32))
    assignment_id: Mapped[str | None] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))  # "success" | "error"
    error_type: Mapped[str | None] = mapped_column(String(64))
    latency_ms: Mapped[float] = mapped_column(default=0.0)
    input_tokens: Mapped[int] = mapped_column(default=0)
    output_tokens: Mapped[int] = mapped_column(default=0)
    cost_usd: Mapped[float] = mapped_column(default=0.0)
    hop: Mapped[int] = mapped_column(default=0)  # 0 = first choice, n = n-th fallback / retry
