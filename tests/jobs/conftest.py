"""Fixtures of the job tests: an SQLite store per test, a manual clock starting at the wall
time (heartbeats written by real worker processes use the wall clock), the test job kinds."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.store import ManualClock
from jobs.jobs_support import register_test_kinds

from dspex.store import Store, open_store


def pytest_configure(config: pytest.Config) -> None:
    # the sim server and the session's Ray (until tests/conftest.py lists them)
    for plugin in ("fixtures.sim", "fixtures.ray_session"):
        if not config.pluginmanager.has_plugin(plugin):
            config.pluginmanager.import_plugin(plugin)


@pytest.fixture(autouse=True)
def _test_kinds() -> None:
    register_test_kinds()


@pytest.fixture
def job_store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'jobs.db'}", shared=False)
    yield s
    s.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(time.time())
