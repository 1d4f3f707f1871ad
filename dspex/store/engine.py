"""``Store``: one database (an SQLite file or PostgreSQL), its engine, sessions and safe writes.

How writes stay safe (the long form is in README.md):

- SQLite runs in WAL mode (readers never block the writer nor each other) with a busy
  timeout. pysqlite's own transaction handling is switched off and dspex emits ``BEGIN``
  itself, so a read is a real snapshot and a write transaction starts with
  ``BEGIN IMMEDIATE``: it takes the database's write lock up front, instead of upgrading a
  read lock halfway (which fails at once with "database is locked", busy timeout or not).
  Within one process writes are serialised by a lock per database file (one writer per
  process, so threads queue on a Python lock instead of SQLite's sleep-and-poll busy
  handler); across processes SQLite's lock does it, and a write still refused after the busy
  timeout is retried with backoff. Use SQLite for one machine.
- PostgreSQL is for clusters: any number of processes write concurrently; a transaction
  that fails on a serialization failure or deadlock is retried.

``Store.write(fn)`` runs ``fn(session)`` in one transaction and retries all of it on those
transient failures, so ``fn`` must only touch the database (no other side effects).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from dspex.errors import AlreadyExists, ConfigurationError, DSPexError, StoreError
from dspex.store import _migrate
from dspex.store._url import redact, resolve_url

__all__ = ["Store", "open_store"]

log = logging.getLogger("dspex.store")

T = TypeVar("T")

_SQLITE_BUSY, _SQLITE_LOCKED = 5, 6
_SQLITE_CONSTRAINT_PRIMARYKEY, _SQLITE_CONSTRAINT_UNIQUE = 1555, 2067
_PG_RETRY_STATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_PG_UNIQUE_VIOLATION = "23505"

_file_locks: dict[str, threading.Lock] = {}
_file_locks_guard = threading.Lock()


def _writer_lock(key: str) -> threading.Lock:
    with _file_locks_guard:
        lock = _file_locks.get(key)
        if lock is None:
            lock = _file_locks[key] = threading.Lock()
        return lock


def is_transient(exc: BaseException) -> bool:
    """True for a database error worth retrying the whole transaction on."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return (code & 0xFF) in (_SQLITE_BUSY, _SQLITE_LOCKED)
    if getattr(orig, "sqlstate", None) in _PG_RETRY_STATES:
        return True
    return bool(exc.connection_invalidated)


def _is_duplicate(exc: IntegrityError) -> bool:
    orig = exc.orig
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        return code in (_SQLITE_CONSTRAINT_UNIQUE, _SQLITE_CONSTRAINT_PRIMARYKEY)
    return getattr(orig, "sqlstate", None) == _PG_UNIQUE_VIOLATION


def _driver_message(exc: SQLAlchemyError) -> str:
    # The driver's own words, without SQLAlchemy's rendering of the statement's parameters.
    orig = getattr(exc, "orig", None)
    return str(orig if orig is not None else exc).strip().splitlines()[0]


class Store:
    """A database opened by ``open_store``. Thread-safe; share one per process."""

    def __init__(
        self,
        url: URL,
        *,
        busy_timeout_ms: int = 10_000,
        write_attempts: int = 8,
        echo: bool = False,
        sqlite_synchronous: str | None = None,
    ) -> None:
        self.url = url
        self.busy_timeout_ms = int(busy_timeout_ms)
        sync = (sqlite_synchronous or os.environ.get("DSPEX_SQLITE_SYNCHRONOUS") or "NORMAL").upper()
        if sync not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigurationError(
                f"sqlite_synchronous must be NORMAL (the default), FULL or EXTRA, not {sync!r}."
            )
        self.sqlite_synchronous = sync
        self.write_attempts = max(1, int(write_attempts))
        self.dialect = url.get_backend_name()
        self.engine: Engine
        if self.dialect == "sqlite":
            self.engine = create_engine(
                url,
                echo=echo,
                connect_args={"check_same_thread": False, "timeout": self.busy_timeout_ms / 1000},
                pool_size=8,
                max_overflow=8,
            )
            self._install_sqlite_events()
            self._lock: threading.Lock | None = _writer_lock(str(url.database))
        else:
            self.engine = create_engine(url, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10)
            self._lock = None
        write_engine = self.engine.execution_options(dspex_sqlite_begin="IMMEDIATE")
        self._read = sessionmaker(bind=self.engine, expire_on_commit=False)
        self._write = sessionmaker(bind=write_engine, expire_on_commit=False)
        self._closed = False
        self._local = threading.local()

    # -- SQLite set-up ----------------------------------------------------------------------
    def _install_sqlite_events(self) -> None:
        busy_ms = self.busy_timeout_ms
        sync = self.sqlite_synchronous

        @event.listens_for(self.engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # dspex emits BEGIN itself (below); pysqlite's deferred implicit BEGIN would make
            # reads non-repeatable and DDL non-transactional.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            try:
                cur.execute(f"PRAGMA busy_timeout={busy_ms}")
                cur.execute("PRAGMA journal_mode=WAL")
                # WAL + NORMAL: a commit survives a crash or restart of the process; only a power
                # loss or OS crash may undo the last commits (never corrupting the file). FULL
                # also survives those, at ~3.5 ms instead of ~0.4 ms per commit (measured here).
                cur.execute(f"PRAGMA synchronous={sync}")
                cur.execute("PRAGMA foreign_keys=ON")
            finally:
                cur.close()

        @event.listens_for(self.engine, "begin")
        def _on_begin(conn: Any) -> None:
            mode = conn.get_execution_options().get("dspex_sqlite_begin", "DEFERRED")
            conn.exec_driver_sql(f"BEGIN {mode}")

    # -- sessions ---------------------------------------------------------------------------
    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    def session(self) -> Session:
        """A session for reads (``with store.session() as s: ...``). Objects stay readable
        after it closes. Write through ``write`` instead."""
        self._check_open()
        return self._read()

    def read(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in a read transaction; database errors become ``StoreError``."""
        self._check_open()
        try:
            with self._read() as session, session.begin():
                return fn(session)
        except DSPexError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(
                f"Reading from the store failed: {_driver_message(exc)}. Check that the database "
                f"at {redact(self.url)} is reachable."
            ) from exc

    def write(self, fn: Callable[[Session], T]) -> T:
        """Run ``fn(session)`` in one write transaction and commit it.

        A busy SQLite file, a PostgreSQL serialization failure or deadlock, or a dropped
        connection retries the whole transaction with backoff (so ``fn`` must only touch the
        database). A duplicate key raises ``AlreadyExists``; other database errors
        ``StoreError``; dspex errors raised by ``fn`` pass through and roll back.
        """
        self._check_open()
        if getattr(self._local, "writing", False):
            raise StoreError(
                "store.write() was called inside another store.write() in the same thread; that "
                "would wait on its own lock. Do the work with the session the outer call was given."
            )
        delay_s = 0.02
        for attempt in range(1, self.write_attempts + 1):
            try:
                if self._lock is None:
                    return self._write_once(fn)
                with self._lock:
                    return self._write_once(fn)
            except DSPexError:
                raise
            except IntegrityError as exc:
                if _is_duplicate(exc):
                    raise AlreadyExists(
                        f"A row with the same key already exists ({_driver_message(exc)}).",
                        hint="Use another name, or update the existing one.",
                    ) from exc
                raise StoreError(f"The database refused the write: {_driver_message(exc)}.") from exc
            except SQLAlchemyError as exc:
                if attempt < self.write_attempts and is_transient(exc):
                    log.debug("store write attempt %d failed transiently; retrying", attempt)
                    time.sleep(delay_s * (0.5 + random.random()))
                    delay_s = min(delay_s * 2, 2.0)
                    continue
                raise StoreError(
                    f"Writing to the store failed after {attempt} attempt(s): {_driver_message(exc)}.",
                    hint=(
                        "Another process may hold the SQLite file's write lock for long; across "
                        "machines use PostgreSQL (DSPEX_DATABASE_URL=postgresql://...)."
                        if self.is_sqlite
                        else "Check that the database is reachable."
                    ),
                ) from exc
        raise AssertionError("unreachable")

    def _write_once(self, fn: Callable[[Session], T]) -> T:
        self._local.writing = True
        try:
            with self._write() as session, session.begin():
                return fn(session)
        finally:
            self._local.writing = False

    # -- schema -----------------------------------------------------------------------------
    def migrate(self, target: str = "head") -> None:
        """Apply migrations up to ``target`` (``open_store`` does this for you)."""
        self._check_open()
        try:
            _migrate.upgrade(self.engine, target)
        except DSPexError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(f"Migrating the store failed: {_driver_message(exc)}.") from exc

    def revision(self) -> str | None:
        """The schema revision the database is at (None for an empty database)."""
        with self.engine.connect() as conn:
            return _migrate.current_revision(conn)

    # -- lifecycle --------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("This store is closed; open it again with dspex.store.open_store().")

    def close(self) -> None:
        """Dispose of the connection pool. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with _shared_guard:
            for key, store in list(_shared.items()):
                if store is self:
                    del _shared[key]
        self.engine.dispose()

    @property
    def closed(self) -> bool:
        return self._closed

    def __repr__(self) -> str:
        return f"Store({redact(self.url)!r})"


_shared: dict[tuple[int, str], Store] = {}
_shared_guard = threading.Lock()


def open_store(
    url: str | URL | None = None,
    *,
    migrate: bool = True,
    shared: bool = True,
    echo: bool = False,
    busy_timeout_ms: int = 10_000,
    sqlite_synchronous: str | None = None,
) -> Store:
    """Open the store at ``url`` (default: ``DSPEX_DATABASE_URL``, else ``.dspex/dspex.db``).

    The schema is upgraded to the newest revision on open (``migrate=False`` skips that). With
    ``shared=True`` (the default) every caller in a process gets the same ``Store`` for the
    same URL, so the process has one connection pool and one writer. ``sqlite_synchronous``
    (default ``DSPEX_SQLITE_SYNCHRONOUS``, else NORMAL) trades durability across power loss
    for commit speed; see README.md.
    """
    resolved = resolve_url(url)
    key = (os.getpid(), resolved.render_as_string(hide_password=False))
    if shared:
        with _shared_guard:
            existing = _shared.get(key)
        if existing is not None and not existing.closed:
            return existing
    store = Store(resolved, echo=echo, busy_timeout_ms=busy_timeout_ms, sqlite_synchronous=sqlite_synchronous)
    try:
        if migrate:
            store.migrate()
    except BaseException:
        store.close()
        raise
    if shared:
        with _shared_guard:
            winner = _shared.setdefault(key, store)
        if winner is not store:
            store.close()
            return winner
    return store
