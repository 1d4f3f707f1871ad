"""Session-wide test set-up. Shared fixtures live in tests/fixtures/ (one module per area)."""

import os

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("DSPEX_HOME", os.path.join(os.path.dirname(__file__), "..", ".dspex", "test"))

pytest_plugins = [
    "fixtures.core",
    "fixtures.sim",
    "fixtures.clients",
    "fixtures.store",
    "fixtures.telemetry",
    "fixtures.ray_session",
    "fixtures.serve",
]
