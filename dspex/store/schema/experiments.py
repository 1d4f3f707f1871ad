"""The experiments table: one row per offline experiment (``ExperimentRecord.to_dict()`` of
``dspex.pipelines.experiments``), written at every step of its run."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from dspex.store.schema.base import Base, new_id, utcnow

__all__ = ["ExperimentRow"]


class ExperimentRow(Base):
    __tablename__ = "experiments"
    __table_args__ = (Index("ix_experiments_status_created_at", "status", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), index=True)
    #: planned | running | completed | failed | cancelled
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: arm name -> ArmResult.to_dict()
    arms: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: ExperimentResult.to_dict() once completed
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
