"""The store's engine: URL choice, SQLite settings, migrations (fresh and from an older
schema), retries on a busy SQLite file, error mapping, data surviving a process restart."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import select, text

from dspex.errors import AlreadyExists, ConfigurationError, StoreError
from dspex.store import Store, default_url, open_store
from dspex.store._migrate import head_revision
from dspex.store.schema import Base, ModelRow, ProgramModelRow, ProgramRow

PY = sys.executable


def test_default_url_is_an_sqlite_file_under_dspex_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSPEX_DATABASE_URL", raising=False)
    monkeypatch.setenv("DSPEX_HOME", str(tmp_path / "home"))
    assert default_url() == f"sqlite:///{tmp_path / 'home' / 'dspex.db'}"
    s = open_store(shared=False)
    try:
        assert (tmp_path / "home" / "dspex.db").exists()
        assert s.revision() == head_revision()
    finally:
        s.close()


def test_default_url_without_home_is_dot_dspex_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DSPEX_DATABASE_URL", raising=False)
    monkeypatch.delenv("DSPEX_HOME", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_url() == f"sqlite:///{tmp_path / '.dspex' / 'dspex.db'}"


def test_database_url_env_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DSPEX_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("DSPEX_DATABASE_URL", f"sqlite:///{tmp_path / 'other.db'}")
    s = open_store(shared=False)
    try:
        assert Path(str(s.url.database)) == tmp_path / "other.db"
        assert not (tmp_path / "home").exists()
    finally:
        s.close()


@pytest.mark.parametrize(
    "url",
    ["mysql://u@h/db", "sqlite://", "sqlite:///:memory:", "postgresql+psycopg2://u@h/db", "not a url"],
)
def test_unsupported_urls_are_refused_clearly(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        open_store(url, shared=False)
    assert "sqlite:///" in str(info.value) or "postgresql://" in str(info.value)


def test_shared_store_is_one_per_url_and_reopens_after_close(sqlite_url: str) -> None:
    a = open_store(sqlite_url)
    b = open_store(sqlite_url)
    assert a is b
    a.close()
    c = open_store(sqlite_url)
    assert c is not a and not c.closed
    c.close()
    with pytest.raises(StoreError, match="closed"):
        a.write(lambda s: None)


def test_sqlite_runs_in_wal_with_busy_timeout_and_foreign_keys(sqlite_url: str) -> None:
    s = open_store(sqlite_url, shared=False, busy_timeout_ms=1234)
    try:
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
    finally:
        s.close()
    full = open_store(sqlite_url, shared=False, sqlite_synchronous="full")
    with full.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2
    full.close()
    with pytest.raises(ConfigurationError, match="sqlite_synchronous"):
        open_store(sqlite_url, shared=False, sqlite_synchronous="OFF")


def test_fresh_schema_matches_the_tables_on_both_databases(store: Store) -> None:
    assert store.revision() == head_revision()
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
    assert diff == []


def test_password_never_shows_in_repr_or_errors() -> None:
    s = Store.__new__(Store)  # not connected: only the URL handling is under test
    from dspex.store._url import resolve_url

    s.url = resolve_url("postgresql://alice:hunter2secret@127.0.0.1:1/db")
    assert "hunter2secret" not in repr(s)
    with pytest.raises(StoreError) as info:
        open_store("postgresql://alice:hunter2secret@127.0.0.1:1/db", shared=False)
    assert "hunter2secret" not in str(info.value)
    assert "hunter2secret" not in repr(info.value.__dict__)


# -- migrations -------------------------------------------------------------------------------


def _insert_at_0001(store: Store) -> None:
    now = "2026-01-01 00:00:00+00:00"
    with store.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO models (id, name, provider, model_name, config, status, cost_per_token, "
                "supports_functions, supports_streaming, success_rate, created_at, updated_at) VALUES "
                "('m1', 'gpt-old', 'openai', 'gpt-4', '{\"t\": 1}', 'available', 0.00003, "
                ":f, :f, 0.97, :now, :now)"
            ),
            {"f": False, "now": now},
        )
        conn.execute(
            text("INSERT INTO programs (id, name, created_at, updated_at) VALUES ('p1', 'qa', :now, :now)"),
            {"now": now},
        )
        conn.execute(
            text(
                "INSERT INTO program_models (id, program_id, model_id, routing_strategy, priority, weight, "
                "conditions, total_requests, successful_requests, total_cost, created_at, updated_at) VALUES "
                "('a1', 'p1', 'm1', 'primary', 5, 100, '{}', 40, 38, 1.25, :now, :now)"
            ),
            {"now": now},
        )


def test_an_older_schema_upgrades_without_losing_data(store_url: str) -> None:
    old = open_store(store_url, migrate=False, shared=False)
    try:
        old.migrate("0001")
        assert old.revision() == "0001"
        _insert_at_0001(old)
    finally:
        old.close()

    new = open_store(store_url, shared=False)
    try:
        assert new.revision() == head_revision()
        with new.session() as s:
            m = s.scalars(select(ModelRow)).one()
            assert (m.name, m.model_name, m.config, m.status, m.success_rate) == (
                "gpt-old", "gpt-4", {"t": 1}, "available", 0.97
            )
            # 0.00003 USD per token is 30 USD per 1M tokens, in and out
            assert m.input_price_per_1m_usd == pytest.approx(30.0)
            assert m.output_price_per_1m_usd == pytest.approx(30.0)
            pm = s.scalars(select(ProgramModelRow)).one()
            assert (pm.total_requests, pm.successful_requests, pm.priority) == (40, 38, 5)
            assert pm.total_cost_usd == pytest.approx(1.25)
            assert s.scalars(select(ProgramRow.name)).all() == ["qa"]
        # foreign keys still hold after the tables were rebuilt
        with pytest.raises(StoreError):
            new.write(lambda s: s.execute(text("INSERT INTO program_models (id, program_id, model_id, "
                                               "routing_strategy, priority, weight, conditions, total_requests, "
                                               "successful_requests, total_cost_usd, created_at, updated_at) VALUES "
                                               "('a2', 'nope', 'm1', 'primary', 0, 1, '{}', 0, 0, 0, "
                                               "'2026-01-01', '2026-01-01')")))
    finally:
        new.close()


def test_a_database_from_a_newer_dspex_is_refused(sqlite_url: str) -> None:
    s = open_store(sqlite_url, shared=False)
    with s.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_future'"))
    s.close()
    with pytest.raises(StoreError, match="newer dspex"):
        open_store(sqlite_url, shared=False)


def test_processes_opening_a_new_database_together_migrate_it_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'race.db'}"
    code = textwrap.dedent(
        f"""
        from dspex.store import open_store
        s = open_store({url!r}, shared=False)
        print(s.revision())
        """
    )
    procs = [subprocess.Popen([PY, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=60) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err
        assert out.strip() == head_revision()


# -- writes --------------------------------------------------------------------------------


def test_duplicate_key_is_already_exists_and_rolls_back(store: Store) -> None:
    store.write(lambda s: s.add(ProgramRow(name="dup")))
    with pytest.raises(AlreadyExists, match="already exists"):
        store.write(lambda s: s.add(ProgramRow(name="dup")))
    assert store.read(lambda s: s.scalars(select(ProgramRow.name)).all()) == ["dup"]


def test_a_dspex_error_raised_inside_a_write_rolls_it_back(store: Store) -> None:
    def fn(s: object) -> None:
        s.add(ProgramRow(name="half"))  # type: ignore[attr-defined]
        s.flush()  # type: ignore[attr-defined]
        raise ConfigurationError("stop here")

    with pytest.raises(ConfigurationError):
        store.write(fn)
    assert store.read(lambda s: s.scalars(select(ProgramRow)).all()) == []


def test_a_nested_write_is_refused_instead_of_deadlocking(store: Store) -> None:
    with pytest.raises(StoreError, match=r"inside another store\.write"):
        store.write(lambda s: store.write(lambda s2: None))
    store.write(lambda s: s.add(ProgramRow(name="after")))  # the store still works


def test_write_waits_out_another_process_holding_the_sqlite_write_lock(sqlite_url: str) -> None:
    s = open_store(sqlite_url, shared=False, busy_timeout_ms=50)
    try:
        # Another connection (as another process would) takes the write lock for 0.3 s, far
        # beyond the 50 ms busy timeout: the write must be retried, not lost.
        other = sqlite3.connect(str(s.url.database), isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO programs (id, name, created_at, updated_at) VALUES ('x', 'first', '2026-01-01', '2026-01-01')")
        release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
        release.start()
        t0 = time.perf_counter()
        s.write(lambda ses: ses.add(ProgramRow(name="second")))
        waited = time.perf_counter() - t0
        release.join()
        other.close()
        assert waited >= 0.25
        assert sorted(s.read(lambda ses: ses.scalars(select(ProgramRow.name)).all())) == ["first", "second"]
    finally:
        s.close()


def test_write_gives_up_with_a_clear_error_when_the_lock_is_never_released(sqlite_url: str) -> None:
    s = open_store(sqlite_url, shared=False, busy_timeout_ms=10)
    s.write_attempts = 3
    other = sqlite3.connect(str(s.url.database), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="PostgreSQL") as info:
            s.write(lambda ses: ses.add(ProgramRow(name="never")))
        assert "3 attempt" in str(info.value)
    finally:
        other.execute("ROLLBACK")
        other.close()
        s.close()


# -- survival across a process restart, and many writer processes ------------------------------

_WRITER = textwrap.dedent(
    """
    import sys, time
    from dspex.store import open_store, Programs, ExecutionLog, ExecutionRecord
    url, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = open_store(url)
    programs = Programs(store)
    log = ExecutionLog(store, flush_interval_ms=20, batch_rows=7)
    for i in range(n):
        log.record(ExecutionRecord(model=who, status="success", latency_ms=i, at_s=time.time(), program="shared"))
        if i % 10 == 0:
            programs.save_version("shared", {"writer": who, "i": i})
    log.close()
    print("ok")
    """
)


def test_many_writer_processes_lose_nothing(store_url: str) -> None:
    open_store(store_url, shared=False).close()  # migrate once up front
    procs = [
        subprocess.Popen([PY, "-c", _WRITER, store_url, f"w{i}", "60"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
        for i in range(3)
    ]
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        assert out.strip() == "ok"
    # read back from a fresh store (pool) in this process
    from sqlalchemy import func

    from dspex.store import Programs
    from dspex.store.schema import ExecutionRow

    check = open_store(store_url, shared=False)
    try:
        n = check.read(lambda s: s.scalar(select(func.count()).select_from(ExecutionRow)))
        per = check.read(lambda s: dict(s.execute(select(ExecutionRow.model, func.count())
                                                  .group_by(ExecutionRow.model)).all()))
        versions = [v.version for v in Programs(check).versions("shared")]
    finally:
        check.close()
    assert n == 180 and sorted(per.values()) == [60, 60, 60]
    assert versions == list(range(1, 19))  # every writer's versions, numbered without a gap


def test_data_survives_a_process_restart(store_url: str) -> None:
    from dspex.store import Programs

    writer = open_store(store_url, shared=False)
    p = Programs(writer)
    p.save_version("survivor", {"demos": [1, 2]}, score=0.75, created_by="run-7", tags=["good"])
    p.set_alias("survivor", "champion", 1, actor="ci", reason="first")
    writer.close()
    read = textwrap.dedent(
        """
        import sys
        from dspex.store import open_store, Programs
        p = Programs(open_store(sys.argv[1]))
        v = p.version("survivor", "champion")
        print(v.state, v.score, v.created_by, v.tags, p.alias_history("survivor")[0].reason)
        """
    )
    r = subprocess.run([PY, "-c", read, store_url], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "{'demos': [1, 2]} 0.75 run-7 ('good',) first"


def test_env_var_selects_postgres_in_a_child_process(postgres_url: str, tmp_path: Path) -> None:
    code = "from dspex.store import open_store; s = open_store(); print(s.dialect, s.revision())"
    env = {**os.environ, "DSPEX_DATABASE_URL": postgres_url, "DSPEX_HOME": str(tmp_path)}
    r = subprocess.run([PY, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["postgresql", head_revision()]
