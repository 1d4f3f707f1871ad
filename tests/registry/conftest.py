"""Fixtures of the registry and router tests (kept here, not in the global plugin, because
their names are generic)."""

from __future__ import annotations

import pytest
from fixtures.store import Fleet, ManualClock

from dspex.registry import ModelRegistry
from dspex.store import Store


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def fleet() -> Fleet:
    return Fleet()


@pytest.fixture
def registry(sqlite_store: Store, clock: ManualClock, fleet: Fleet) -> ModelRegistry:
    """A ``ModelRegistry`` on a fresh SQLite file, a manual clock and the scripted fleet."""
    return ModelRegistry(sqlite_store, clock=clock, lm_factory=fleet)  # type: ignore[arg-type]
