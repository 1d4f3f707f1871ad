"""Cooldowns: stop sending calls to a failing model for a while, then let one probe through.

LiteLLM's router defaults, kept: a model cools down for ``cooldown_s`` (5 s) after
``allowed_fails`` (3) counted failures within ``window_s`` (60 s), or when more than half of
at least ``min_calls`` (5) calls in the window failed. What counts is a provider's refusal that
says the model cannot serve now: 401, 402, 404, 408, 429 and 5xx, plus failures that never got
an HTTP status (connection refused or reset, timeouts, an open circuit). Other 4xx (a bad
request, a context window overflow, a content-policy refusal) are the caller's problem and
do not count.

Done better than LiteLLM:

- the state is visible: ``states()`` lists every model that is cooling or half-open with its
  reason, failure counts and deadline; entering and leaving a cooldown emits ``ROUTER_COOLDOWN``
  (the ``dspex_model_cooldown_seconds`` gauge), every change a gauge event
  ``("dspex", "router", "cooldowns")`` with the number of models not closed;
- a repeated cooldown extends the deadline: a counted failure reported while cooling (a call
  that was already in flight) pushes the deadline to ``now + duration``, and a cooldown that
  follows a failed probe lasts twice as long as the one before (up to ``max_cooldown_s``);
- recovery is a half-open probe: when the deadline passes, exactly one call is let through
  (``acquire``); its success closes the cooldown, its failure starts a longer one; a probe
  that never reports frees its slot after ``probe_timeout_s``;
- the router passes ``can_cool``, and a model it reports as the last one able to serve some
  program is never cooled (an event says so, at most once per window) — cooling it would turn
  a partial outage into a total one.

The tracker is a state machine over an injected clock (``clock``, seconds): tests drive it
without sleeping.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from dspex import telemetry
from dspex.errors import (
    BadResponse,
    CircuitOpen,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
)
from dspex.telemetry import names

__all__ = [
    "COUNTED_STATUSES",
    "CooldownPolicy",
    "CooldownState",
    "CooldownTracker",
    "Phase",
    "counts_for_cooldown",
]

COUNTED_STATUSES = frozenset({401, 402, 404, 408, 429})
_NO_STATUS_COUNTED = (ProviderUnavailable, ProviderTimeout, RateLimited, CircuitOpen, BadResponse)

# Entering and leaving a cooldown is the catalog's ROUTER_COOLDOWN (``cooldown_s``: its length,
# 0 when it ends), which feeds the dspex_model_cooldown_seconds gauge and the cooldowns counter.
_COOLDOWN = names.ROUTER_COOLDOWN
_EXTEND = ("dspex", "router", "cooldown_extended")
_HALF_OPEN = ("dspex", "router", "cooldown_half_open")
_SKIPPED = ("dspex", "router", "cooldown_skipped")
_GAUGE = ("dspex", "router", "cooldowns")  # how many models are not closed


def counts_for_cooldown(exc: BaseException) -> bool:
    """Whether a failed call counts towards cooling its model down (by type and status only)."""
    if not isinstance(exc, ProviderError):
        return False
    status = getattr(exc, "status", None)
    if status is None:
        return isinstance(exc, _NO_STATUS_COUNTED)
    return status in COUNTED_STATUSES or status >= 500


class Phase(StrEnum):
    CLOSED = "closed"
    COOLING = "cooling"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CooldownPolicy:
    window_s: float = 60.0
    allowed_fails: int = 3
    min_calls: int = 5
    failure_rate: float = 0.5  # cool when the failed share is *above* this
    cooldown_s: float = 5.0
    max_cooldown_s: float = 60.0
    probe_timeout_s: float = 30.0
    #: at most one trial call per model this often (see ``try_trial``)
    trial_interval_s: float = 1.0
    buckets: int = 60

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.cooldown_s <= 0 or self.max_cooldown_s < self.cooldown_s:
            raise ValueError("CooldownPolicy needs window_s > 0 and 0 < cooldown_s <= max_cooldown_s.")
        if self.allowed_fails < 1 or self.min_calls < 1 or not 0 <= self.failure_rate < 1:
            raise ValueError("CooldownPolicy needs allowed_fails >= 1, min_calls >= 1, 0 <= failure_rate < 1.")
        if self.buckets < 1 or self.probe_timeout_s <= 0 or self.trial_interval_s < 0:
            raise ValueError("CooldownPolicy needs buckets >= 1, probe_timeout_s > 0, trial_interval_s >= 0.")

    def duration_s(self, cooldowns: int) -> float:
        """The length of the ``cooldowns``-th consecutive cooldown (1, 2, ...)."""
        return min(self.cooldown_s * 2 ** max(cooldowns - 1, 0), self.max_cooldown_s)


@dataclass(frozen=True, slots=True)
class CooldownState:
    """What the tracker knows about one model that is not closed."""

    model: str
    phase: Phase
    reason: str
    failures: int  # counted failures in the window when the cooldown began
    calls: int  # calls in the window when the cooldown began
    since_s: float
    until_s: float
    remaining_s: float
    cooldowns: int  # consecutive cooldowns without a recovery
    probe_in_flight: bool


class _Window:
    """Calls and counted failures in a sliding window of ``n`` buckets."""

    __slots__ = ("bucket_s", "calls", "fails", "n", "stamp")

    def __init__(self, window_s: float, n: int) -> None:
        self.n = n
        self.bucket_s = window_s / n
        self.calls = [0] * n
        self.fails = [0] * n
        self.stamp = [-1] * n

    def add(self, now_s: float, failed: bool) -> None:
        idx = int(now_s // self.bucket_s)
        i = idx % self.n
        if self.stamp[i] != idx:
            self.stamp[i] = idx
            self.calls[i] = 0
            self.fails[i] = 0
        self.calls[i] += 1
        if failed:
            self.fails[i] += 1

    def totals(self, now_s: float) -> tuple[int, int]:
        lo = int(now_s // self.bucket_s) - self.n + 1
        calls = fails = 0
        for i in range(self.n):
            if self.stamp[i] >= lo:
                calls += self.calls[i]
                fails += self.fails[i]
        return calls, fails

    def clear(self) -> None:
        self.stamp = [-1] * self.n


class _Entry:
    __slots__ = (
        "calls",
        "cooldowns",
        "failures",
        "last_trial_s",
        "lease_until_s",
        "phase",
        "reason",
        "since_s",
        "skip_reported_s",
        "until_s",
        "window",
    )

    def __init__(self, policy: CooldownPolicy) -> None:
        self.window = _Window(policy.window_s, policy.buckets)
        self.phase = Phase.CLOSED
        self.reason = ""
        self.failures = 0
        self.calls = 0
        self.since_s = 0.0
        self.until_s = 0.0
        self.cooldowns = 0
        #: a probe or trial call holds the model's single slot until it reports or this passes
        self.lease_until_s: float | None = None
        self.last_trial_s = -math.inf
        self.skip_reported_s = -math.inf


class CooldownTracker:
    """Per-model cooldown state. Thread-safe; ``available`` is lock-free for the hot path."""

    def __init__(
        self,
        policy: CooldownPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        can_cool: Callable[[str], bool] | None = None,
    ) -> None:
        self.policy = policy or CooldownPolicy()
        self.clock = clock
        self.can_cool = can_cool
        self._entries: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------
    def available(self, model: str, now_s: float | None = None) -> bool:
        """Whether a call may go to ``model`` now: closed, or half-open with its probe slot free."""
        e = self._entries.get(model)
        if e is None or e.phase is Phase.CLOSED:
            return True
        now = self.clock() if now_s is None else now_s
        if e.phase is Phase.COOLING and now < e.until_s:
            return False
        return e.lease_until_s is None or now >= e.lease_until_s

    def needs_probe(self, model: str) -> bool:
        """True when a call to ``model`` must first take its probe slot (``acquire``)."""
        e = self._entries.get(model)
        return e is not None and e.phase is not Phase.CLOSED

    def state(self, model: str) -> CooldownState | None:
        e = self._entries.get(model)
        if e is None or e.phase is Phase.CLOSED:
            return None
        return self._snapshot(model, e, self.clock())

    def states(self) -> list[CooldownState]:
        now = self.clock()
        with self._lock:
            return [self._snapshot(m, e, now) for m, e in sorted(self._entries.items()) if e.phase is not Phase.CLOSED]

    def cooling_count(self) -> int:
        return sum(1 for e in list(self._entries.values()) if e.phase is not Phase.CLOSED)

    def soonest_until_s(self, model: str) -> float:
        e = self._entries.get(model)
        return -math.inf if e is None or e.phase is Phase.CLOSED else e.until_s

    def _snapshot(self, model: str, e: _Entry, now: float) -> CooldownState:
        phase = e.phase
        if phase is Phase.COOLING and now >= e.until_s:
            phase = Phase.HALF_OPEN
        probing = e.lease_until_s is not None and now < e.lease_until_s
        return CooldownState(model, phase, e.reason, e.failures, e.calls, e.since_s, e.until_s,
                             max(0.0, e.until_s - now), e.cooldowns, probing)

    # -- taking the probe / trial slot ------------------------------------------------------
    def acquire(self, model: str) -> bool:
        """Take ``model``'s probe slot if it is half-open (True), or say it is closed (True),
        or refuse (False) when it is cooling or another probe holds the slot."""
        now = self.clock()
        emit_half_open = False
        with self._lock:
            e = self._entries.get(model)
            if e is None or e.phase is Phase.CLOSED:
                return True
            if e.phase is Phase.COOLING:
                if now < e.until_s:
                    return False
                e.phase = Phase.HALF_OPEN
                e.lease_until_s = None
                emit_half_open = True
            if e.lease_until_s is not None and now < e.lease_until_s:
                return False
            e.lease_until_s = now + self.policy.probe_timeout_s
        if emit_half_open:
            telemetry.emit(_HALF_OPEN, {"count": 1}, {"model": model, "cooldowns": e.cooldowns})
        return True

    def try_trial(self, model: str) -> bool:
        """Let one call through to a model in poor health, at most every ``trial_interval_s``
        and one at a time (a half-open model: its probe slot). Real traffic so measures
        whether it recovered, without sending it full traffic."""
        now = self.clock()
        with self._lock:
            e = self._entries.get(model)
            if e is not None and e.phase is not Phase.CLOSED:
                pass  # fall through to acquire below, outside the lock
            else:
                if e is None:
                    e = self._entries[model] = _Entry(self.policy)
                if e.lease_until_s is not None and now < e.lease_until_s:
                    return False
                if now - e.last_trial_s < self.policy.trial_interval_s:
                    return False
                e.last_trial_s = now
                e.lease_until_s = now + self.policy.probe_timeout_s
                return True
        return self.acquire(model)

    # -- outcomes ---------------------------------------------------------------------------
    def record(self, model: str, *, success: bool, counted: bool = True) -> CooldownState | None:
        """Report one call's outcome. ``counted``: whether a failure counts (``counts_for_cooldown``).

        Returns the new state when this outcome started or extended a cooldown, else None.
        """
        now = self.clock()
        failed = not success and counted
        events: list[tuple[tuple[str, ...], dict[str, float], dict[str, object]]] = []
        result: CooldownState | None = None
        with self._lock:
            e = self._entries.get(model)
            if e is None:
                e = self._entries[model] = _Entry(self.policy)
            e.window.add(now, failed)  # successes too: the failure-rate rule needs every call
            if e.phase is Phase.CLOSED:
                if not failed:
                    e.lease_until_s = None  # a trial reported
                    return None
                calls, fails = e.window.totals(now)
                reason = self._trip_reason(calls, fails)
                if reason is None:
                    e.lease_until_s = None
                    return None
                if self.can_cool is not None and not self.can_cool(model):
                    e.lease_until_s = None
                    if now - e.skip_reported_s >= self.policy.window_s:
                        e.skip_reported_s = now
                        events.append((_SKIPPED, {"failures": fails, "calls": calls},
                                       {"model": model, "reason": "last model able to serve a program"}))
                else:
                    e.cooldowns += 1
                    self._cool(e, now, reason, calls, fails)
                    result = self._snapshot(model, e, now)
                    events.append(self._start_event(model, e))
            elif e.phase is Phase.COOLING and now < e.until_s:
                if failed:
                    until = now + self.policy.duration_s(e.cooldowns)
                    if until > e.until_s:
                        e.until_s = until
                        result = self._snapshot(model, e, now)
                        events.append((_EXTEND, {"until_s": until, "remaining_s": until - now},
                                       {"model": model, "reason": "failure while cooling"}))
            else:  # half-open (or cooling past its deadline): this is the probe reporting
                if success:
                    e.phase = Phase.CLOSED
                    e.cooldowns = 0
                    e.lease_until_s = None
                    e.window.clear()
                    events.append((_COOLDOWN, {"cooldown_s": 0.0, "cooled_s": now - e.since_s},
                                   {"model": model, "reason": "probe succeeded"}))
                elif failed:
                    if self.can_cool is not None and not self.can_cool(model):
                        e.phase = Phase.CLOSED
                        e.lease_until_s = None
                        events.append((_COOLDOWN, {"cooldown_s": 0.0, "cooled_s": now - e.since_s},
                                       {"model": model, "reason": "last model able to serve a program"}))
                    else:
                        e.cooldowns += 1
                        calls, fails = e.window.totals(now)
                        self._cool(e, now, "half-open probe failed", calls, fails)
                        result = self._snapshot(model, e, now)
                        events.append(self._start_event(model, e))
                else:
                    e.lease_until_s = None  # the probe failed for a reason that says nothing
            count = sum(1 for x in self._entries.values() if x.phase is not Phase.CLOSED)
        for ev, meas, meta in events:
            telemetry.emit(ev, meas, meta)
        if events:
            telemetry.emit(_GAUGE, {"cooling": count}, {})
        return result

    def release(self, model: str) -> None:
        """Free ``model``'s probe or trial slot without recording an outcome (a call that was
        cancelled, or answered from a cache, says nothing about the model)."""
        with self._lock:
            e = self._entries.get(model)
            if e is not None:
                e.lease_until_s = None

    def reset(self, model: str | None = None) -> None:
        """Forget the state of one model (or all)."""
        with self._lock:
            if model is None:
                self._entries.clear()
            else:
                self._entries.pop(model, None)
            count = sum(1 for x in self._entries.values() if x.phase is not Phase.CLOSED)
        telemetry.emit(_GAUGE, {"cooling": count}, {})

    def _trip_reason(self, calls: int, fails: int) -> str | None:
        p = self.policy
        if fails >= p.allowed_fails:
            return f"{fails} failures in {p.window_s:g} s"
        if calls >= p.min_calls and fails / calls > p.failure_rate:
            return f"{fails} of {calls} calls failed in {p.window_s:g} s"
        return None

    def _cool(self, e: _Entry, now: float, reason: str, calls: int, fails: int) -> None:
        e.phase = Phase.COOLING
        e.reason = reason
        e.calls, e.failures = calls, fails
        e.since_s = now
        e.until_s = now + self.policy.duration_s(e.cooldowns)
        e.lease_until_s = None

    @staticmethod
    def _start_event(model: str, e: _Entry) -> tuple[tuple[str, ...], dict[str, float], dict[str, object]]:
        return (
            _COOLDOWN,
            {"cooldown_s": e.until_s - e.since_s, "failures": e.failures, "calls": e.calls},
            {"model": model, "reason": e.reason, "cooldowns": e.cooldowns},
        )
