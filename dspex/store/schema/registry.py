"""Tables of the model registry: models and program<->model assignments (Stage 4 §1.1-1.2).

A model row never holds an API key: ``secret_ref`` is the *name* of the environment variable
that holds it, read by the process that makes the call.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dspex.store.schema.base import Base, Timestamps, new_id

__all__ = ["ModelRow", "ProgramModelRow"]


class ModelRow(Timestamps, Base):
    __tablename__ = "models"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    provider: Mapped[str] = mapped_column(String(32))
    model_name: Mapped[str] = mapped_column(String(200))
    base_url: Mapped[str | None] = mapped_column(String(500))
    secret_ref: Mapped[str | None] = mapped_column(String(128))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="testing")
    status_reason: Mapped[str | None] = mapped_column(Text)

    input_price_per_1m_usd: Mapped[float] = mapped_column(default=0.0)
    output_price_per_1m_usd: Mapped[float] = mapped_column(default=0.0)
    max_tokens: Mapped[int | None]
    context_window: Mapped[int | None]
    supports_functions: Mapped[bool] = mapped_column(default=False)
    supports_streaming: Mapped[bool] = mapped_column(default=False)

    # measured
    average_latency_ms: Mapped[float | None]
    success_rate: Mapped[float | None]
    last_health_check: Mapped[datetime | None]
    last_call_at: Mapped[datetime | None]


class ProgramModelRow(Timestamps, Base):
    __tablename__ = "program_models"
    __table_args__ = (UniqueConstraint("program_id", "model_id", name="uq_program_models_program_model"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    model_id: Mapped[str] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    routing_strategy: Mapped[str] = mapped_column(String(24), default="primary")
    priority: Mapped[int] = mapped_column(default=0)
    weight: Mapped[int] = mapped_column(default=100)
    conditions: Mapped[dict[str, Any]] = mapped_column(default=dict)

    # measured totals, incremented in place by the execution log's batches
    total_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    successful_requests: Mapped[int] = mapped_column(BigInteger, default=0)
    total_cost_usd: Mapped[float] = mapped_column(default=0.0)
