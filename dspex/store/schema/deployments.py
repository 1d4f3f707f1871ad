"""Tables of the deployment side (issue 10): pipelines, deployments and rollout states.

Each row keeps the object's whole JSON form (``to_dict()`` of ``DeploymentPipeline``,
``Deployment`` and ``RolloutState`` in ``dspex.pipelines.rollouts``) in ``doc``, plus the
columns a controller filters on (program, status or phase, version numbers, updated_at).
``revision`` counts the writes of a row: a controller writes with the revision it read, so
two controllers of one rollout never overwrite each other's tick (compare-and-set).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index, String
from sqlalchemy.orm import Mapped, mapped_column

from dspex.store.schema.base import Base, new_id, utcnow

__all__ = ["DeploymentPipelineRow", "DeploymentRow", "RolloutStateRow"]


class DeploymentPipelineRow(Base):
    __tablename__ = "deployment_pipelines"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    program: Mapped[str] = mapped_column(String(200), index=True)
    #: draft | active | paused | failed
    status: Mapped[str] = mapped_column(String(16))
    doc: Mapped[dict[str, Any]]
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class DeploymentRow(Base):
    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_program_status", "program", "status"),)

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    program: Mapped[str] = mapped_column(String(200))
    version: Mapped[int]
    pipeline: Mapped[str | None] = mapped_column(String(200), index=True)
    #: pending | validating | deploying | paused | deployed | failed | rolled_back
    status: Mapped[str] = mapped_column(String(16))
    step_index: Mapped[int] = mapped_column(default=-1)
    weight: Mapped[float] = mapped_column(default=0.0)
    doc: Mapped[dict[str, Any]]
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RolloutStateRow(Base):
    __tablename__ = "rollout_states"
    __table_args__ = (Index("ix_rollout_states_program_terminal", "program", "terminal"),)

    rollout_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    deployment_id: Mapped[str | None] = mapped_column(String(200), index=True)
    program: Mapped[str] = mapped_column(String(200))
    canary: Mapped[int]
    champion: Mapped[int | None]
    phase: Mapped[str] = mapped_column(String(32))
    #: the phase is succeeded, failed, rolled_back or aborted
    terminal: Mapped[bool] = mapped_column(default=False)
    step_index: Mapped[int] = mapped_column(default=-1)
    weight: Mapped[float] = mapped_column(default=0.0)
    failed_checks: Mapped[int] = mapped_column(default=0)
    doc: Mapped[dict[str, Any]]
    revision: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
