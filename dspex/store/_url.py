"""Which database a store opens: ``DSPEX_DATABASE_URL``, else an SQLite file in ``.dspex/``.

The folder is ``$DSPEX_HOME`` when set, else ``.dspex/`` in the working directory. A
``postgresql://`` URL is driven by psycopg 3 (SQLAlchemy's default PostgreSQL driver would be
psycopg2, which dspex does not depend on).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from dspex.errors import ConfigurationError

__all__ = ["DEFAULT_DB_FILE", "default_url", "redact", "resolve_url"]

DEFAULT_DB_FILE = "dspex.db"


def dspex_home() -> Path:
    home = os.environ.get("DSPEX_HOME")
    return Path(home).expanduser() if home else Path.cwd() / ".dspex"


def default_url() -> str:
    """``DSPEX_DATABASE_URL`` if set, else the SQLite file under ``dspex_home()``."""
    env = os.environ.get("DSPEX_DATABASE_URL")
    if env:
        return env
    return f"sqlite:///{dspex_home() / DEFAULT_DB_FILE}"


def resolve_url(url: str | URL | None) -> URL:
    """Parse and normalise a database URL; create the SQLite file's folder."""
    raw = default_url() if url is None else url
    try:
        parsed = make_url(raw)
    except ArgumentError as exc:
        raise ConfigurationError(
            "The database URL could not be parsed; use sqlite:///path/to/file.db or "
            "postgresql://user@host:port/dbname."
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
        elif parsed.drivername != "postgresql+psycopg":
            raise ConfigurationError(
                f"dspex drives PostgreSQL with psycopg 3; use a postgresql:// URL, not {parsed.drivername}://."
            )
    elif backend == "sqlite":
        db = parsed.database or ""
        if db in ("", ":memory:") or db.startswith("file:"):
            raise ConfigurationError(
                "dspex needs an SQLite *file* (several connections and processes share it); "
                "use sqlite:///path/to/file.db."
            )
        Path(db).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
        parsed = parsed.set(database=str(Path(db).expanduser().resolve()))
    else:
        raise ConfigurationError(
            f"Unsupported database {backend!r}; dspex stores to SQLite (sqlite:///file.db) or "
            "PostgreSQL (postgresql://...)."
        )
    return parsed


def redact(url: URL) -> str:
    """The URL for logs and reprs: the password is masked."""
    return url.render_as_string(hide_password=True)
