"""Telemetry event names the actors emit.

Most come from ``dspex.telemetry.names`` (cache hit/miss/evict, overload, error recovery,
hot swap). The ones below are new with the actor layer; they belong in ``names.py`` /
``events.md`` / ``catalog.py`` (owned by telemetry) and are spelled here until they move.

| name | kind | measurements | metadata |
|---|---|---|---|
| ``PREDICTOR_EXECUTE`` | span | ``duration_s`` | ``program``*L*, ``version``*L*, ``predictor`` |
| ``SIGNATURE_SHARED`` | event | ``duration_s``, ``wait_s`` | ``outcome``*L* (``compiled`` / ``fetched`` / ``local``), ``signature`` |
| ``SINK_DROPPED`` | event | ``count`` | ``component``*L* |
| ``ROUTES_PUBLISHED`` | event | ``epoch``, ``versions`` | ``program``*L* |
| ``ROLLOUT_STEP`` | event | ``weight`` (0..100), ``failed_checks`` | ``program``*L*, ``phase``*L*, ``version`` |
"""

from __future__ import annotations

from dspex.telemetry import names
from dspex.telemetry._events import Event

__all__ = [
    "CACHE_EVICT",
    "CACHE_HIT",
    "CACHE_MISS",
    "ERROR_RECOVERY",
    "HOTSWAP",
    "OVERLOAD",
    "PREDICTOR_EXECUTE",
    "ROLLOUT_STEP",
    "ROUTES_PUBLISHED",
    "SIGNATURE_SHARED",
    "SINK_DROPPED",
]

CACHE_HIT = names.CACHE_HIT
CACHE_MISS = names.CACHE_MISS
CACHE_EVICT = names.CACHE_EVICT
OVERLOAD = names.OVERLOAD
ERROR_RECOVERY = names.ERROR_RECOVERY
HOTSWAP = names.HOTSWAP

PREDICTOR_EXECUTE: Event = names.PREDICTOR_EXECUTE
SIGNATURE_SHARED: Event = names.SIGNATURE_SHARED
SINK_DROPPED: Event = names.PREDICTOR_SINK_DROPPED
ROUTES_PUBLISHED: Event = names.ROUTES_PUBLISHED
ROLLOUT_STEP: Event = names.HOTSWAP_STEP
