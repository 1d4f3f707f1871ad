"""The declarative base every table module shares, and the column types they use.

Times are stored as timezone-aware UTC datetimes. SQLite keeps no zone, so ``UTCDateTime``
re-attaches UTC on the way out: every datetime read from the store is aware and in UTC,
whichever database is behind it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, DateTime, Float, Integer, MetaData
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

__all__ = ["Base", "BigIntId", "JSONDoc", "Timestamps", "UTCDateTime", "new_id", "utcnow"]

# Constraint names are spelled out so migrations can refer to them on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: JSON documents (JSONB on PostgreSQL, so they can be indexed and queried there)
JSONDoc = JSON().with_variant(JSONB(), "postgresql")

#: an autoincrementing 64-bit key (SQLite only autoincrements an INTEGER PRIMARY KEY)
BigIntId = BigInteger().with_variant(Integer(), "sqlite")


def new_id() -> str:
    """A new primary key for a named row (a UUID4 as 32 hex digits)."""
    return uuid.uuid4().hex


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on every database (naive values are refused)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("dspex stores aware datetimes only; pass datetime.now(UTC) or similar.")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dict[str, Any]: JSONDoc,
        list[Any]: JSONDoc,
        datetime: UTCDateTime,
        float: Float(),  # what the migrations create (SQLAlchemy 2.1 would pick Double)
    }


class Timestamps:
    """``created_at`` / ``updated_at`` columns, set by Python so every database agrees."""

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
