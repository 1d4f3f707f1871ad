"""Alembic environment for dspex's store.

dspex runs migrations itself when a store is opened (``dspex.store.open_store``), handing
Alembic an open connection inside the transaction that holds the migration lock. The
command-line path (``alembic -c dspex/store/alembic.ini ...``, for writing new revisions)
connects to ``DSPEX_DATABASE_URL`` or the default SQLite file instead.
"""

from __future__ import annotations

from alembic import context

from dspex.store.schema import Base


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters tables by copy-and-move
        transactional_ddl=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    # Command-line use: open the store's engine without migrating, then migrate here.
    from dspex.store.engine import open_store

    store = open_store(context.config.get_main_option("sqlalchemy.url") or None, migrate=False, shared=False)
    try:
        with store.engine.begin() as conn:
            _run(conn)
    finally:
        store.close()


if context.is_offline_mode():
    raise SystemExit("dspex migrations run online only (they need the database's dialect).")
run_migrations_online()
