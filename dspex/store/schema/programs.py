"""Tables of programs and their versions.

A program version is immutable once written (saved state, signature hashes, score, which
optimizer run made it, the trainset's hash); the database itself refuses an UPDATE of a
version row (a trigger installed by migration 0002). What moves is an alias (``champion``,
``canary``), and every move of an alias is written to ``program_alias_events``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from dspex.store.schema.base import Base, BigIntId, Timestamps, new_id, utcnow

__all__ = [
    "ProgramAliasEventRow",
    "ProgramAliasRow",
    "ProgramRow",
    "ProgramVersionRow",
    "ProgramVersionTagRow",
]


class ProgramRow(Timestamps, Base):
    __tablename__ = "programs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str | None] = mapped_column(Text)


class ProgramVersionRow(Base):
    __tablename__ = "program_versions"
    __table_args__ = (UniqueConstraint("program_id", "version", name="uq_program_versions_program_version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), index=True)
    version: Mapped[int]
    state: Mapped[dict[str, Any]]
    signature_hashes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    score: Mapped[float | None]
    created_by: Mapped[str | None] = mapped_column(String(200))
    trainset_hash: Mapped[str | None] = mapped_column(String(128))
    notes: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProgramVersionTagRow(Base):
    __tablename__ = "program_version_tags"

    version_id: Mapped[str] = mapped_column(
        ForeignKey("program_versions.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProgramAliasRow(Base):
    __tablename__ = "program_aliases"

    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version_id: Mapped[str] = mapped_column(ForeignKey("program_versions.id", ondelete="CASCADE"), index=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ProgramAliasEventRow(Base):
    """The audit trail of aliases: one row per set, move or removal, never updated."""

    __tablename__ = "program_alias_events"
    __table_args__ = (Index("ix_program_alias_events_program_alias", "program_id", "alias", "id"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    program_id: Mapped[str] = mapped_column(ForeignKey("programs.id", ondelete="CASCADE"))
    alias: Mapped[str] = mapped_column(String(64))
    from_version_id: Mapped[str | None] = mapped_column(String(32))
    to_version_id: Mapped[str | None] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(200))
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
