"""Apply the store's Alembic migrations when a store is opened (``upgrade head``).

Several processes may open the same database at once (Ray workers starting together), so
the upgrade runs under a lock held for the whole migration transaction: on SQLite the write
lock of ``BEGIN IMMEDIATE`` (DDL is transactional there once pysqlite's own transaction
handling is off, see ``engine.py``), on PostgreSQL a transaction-scoped advisory lock. The
second opener then finds the schema at head and does nothing. A database whose revision this
dspex does not know (written by a newer dspex) is refused rather than touched.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text

from dspex.errors import StoreError

__all__ = ["MIGRATIONS_DIR", "current_revision", "head_revision", "upgrade"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# any constant 64-bit number; names dspex's migration lock among advisory locks
_PG_LOCK_KEY = 0x6473706578_01

_script: ScriptDirectory | None = None


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    global _script
    if _script is None:
        _script = ScriptDirectory.from_config(_config())
    return _script


def head_revision() -> str:
    head = script_directory().get_current_head()
    assert head is not None  # the package ships at least one revision
    return head


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def _check_known(revision: str | None) -> None:
    if revision is None:
        return
    known = {s.revision for s in script_directory().walk_revisions()}
    if revision not in known:
        raise StoreError(
            f"The database is at schema revision {revision!r}, which this dspex does not know "
            "(it was written by a newer dspex). Upgrade dspex, or point DSPEX_DATABASE_URL at "
            "another database."
        )


def upgrade(engine: Engine, target: str = "head") -> None:
    """Bring the schema to ``target`` (default: head), holding the migration lock."""
    want = head_revision() if target == "head" else target
    with engine.connect() as conn:
        rev = current_revision(conn)
        conn.rollback()
    _check_known(rev)
    if rev == want:
        return
    if engine.dialect.name == "sqlite":
        _upgrade_sqlite(engine, target)
    else:
        _upgrade_postgres(engine, target)


def _upgrade_postgres(engine: Engine, target: str) -> None:
    with engine.connect() as conn:
        with conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_LOCK_KEY})
            _check_known(current_revision(conn))
            command.upgrade(_config(conn), target)


def _upgrade_sqlite(engine: Engine, target: str) -> None:
    # Batch migrations copy a table, drop the old one and rename the copy; with foreign keys
    # enforced, dropping a referenced table would cascade-delete its dependants' rows. So the
    # migration runs with enforcement off (the PRAGMA is a no-op inside a transaction, hence
    # on the raw connection before BEGIN) and checks every key before it commits.
    with engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.execution_options(dspex_sqlite_begin="IMMEDIATE").begin():
                _check_known(current_revision(conn))
                command.upgrade(_config(conn), target)
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StoreError(
                        f"The migration to {target} would leave {len(broken)} broken foreign "
                        f"keys (first: {tuple(broken[0])}); nothing was changed. Report this."
                    )
        finally:
            raw.execute("PRAGMA foreign_keys=ON")
