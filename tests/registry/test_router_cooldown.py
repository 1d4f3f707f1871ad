"""The cooldown tracker, driven tick by tick with a manual clock."""

from __future__ import annotations

from typing import Any

import pytest

from dspex import errors, telemetry
from dspex.registry import CooldownPolicy, CooldownTracker, Phase, counts_for_cooldown


class Clock:
    def __init__(self) -> None:
        self.t = 500.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def events() -> Any:
    seen: list[tuple[str, dict[str, Any], dict[str, Any]]] = []

    def on(ev: tuple[str, ...], m: dict[str, Any], md: dict[str, Any], cfg: Any) -> None:
        kind = ev[-1]
        if kind == "cooldown":  # the catalog's ROUTER_COOLDOWN: entering (cooldown_s > 0) or leaving
            kind = "start" if m["cooldown_s"] > 0 else "end"
        seen.append((kind.removeprefix("cooldown_"), m, md))

    telemetry.attach_many(
        "test-cooldown",
        [("dspex", "router", "cooldown"), ("dspex", "router", "cooldown_extended"),
         ("dspex", "router", "cooldown_half_open"), ("dspex", "router", "cooldown_skipped"),
         ("dspex", "router", "cooldowns")],
        on,
    )
    yield seen
    telemetry.detach("test-cooldown")


def _err(cls: type[errors.ProviderError], status: int | None) -> errors.ProviderError:
    return cls("x", provider="p", model="m", status=status)


COUNTING = [
    (_err(errors.RateLimited, 429), True),
    (_err(errors.AuthenticationError, 401), True),
    (_err(errors.QuotaExceeded, 402), True),
    (_err(errors.ModelNotFound, 404), True),
    (_err(errors.ProviderTimeout, 408), True),
    (_err(errors.ProviderUnavailable, 500), True),
    (_err(errors.ProviderUnavailable, 503), True),
    (_err(errors.ProviderUnavailable, 599), True),
    (_err(errors.ProviderUnavailable, None), True),  # connection refused
    (_err(errors.ProviderTimeout, None), True),  # read timeout
    (_err(errors.CircuitOpen, None), True),
    (_err(errors.BadResponse, None), True),
    (_err(errors.AuthenticationError, 403), False),
    (_err(errors.BadRequest, 400), False),
    (_err(errors.BadRequest, 422), False),
    (_err(errors.ContextWindowExceeded, 400), False),
    (_err(errors.ContextWindowExceeded, 413), False),
    (_err(errors.ContentPolicyViolation, 400), False),
    (_err(errors.ContextWindowExceeded, None), False),
    (errors.AdapterParseError("bad"), False),
    (ValueError("bug"), False),
]


@pytest.mark.parametrize(("exc", "counts"), COUNTING)
def test_which_failures_count(exc: BaseException, counts: bool) -> None:
    assert counts_for_cooldown(exc) is counts


def test_three_failures_in_a_minute_cool_for_five_seconds(events: Any) -> None:
    clock = Clock()
    t = CooldownTracker(clock=clock)
    assert t.record("m", success=False) is None
    clock.t += 30
    assert t.record("m", success=False) is None
    clock.t += 29
    st = t.record("m", success=False)
    assert st is not None and st.phase is Phase.COOLING and st.failures == 3 and st.until_s == clock.t + 5
    assert st.reason == "3 failures in 60 s"
    assert not t.available("m")
    assert [e[0] for e in events] == ["start", "cooldowns"]
    assert events[1][1] == {"cooling": 1}
    [visible] = t.states()
    assert (visible.model, visible.phase, visible.remaining_s, visible.cooldowns) == ("m", Phase.COOLING, 5.0, 1)


def test_failures_older_than_the_window_do_not_count() -> None:
    clock = Clock()
    t = CooldownTracker(clock=clock)
    t.record("m", success=False)
    t.record("m", success=False)
    clock.t += 61
    assert t.record("m", success=False) is None
    assert t.available("m")


def test_more_than_half_of_five_calls_failing_cools(events: Any) -> None:
    clock = Clock()
    # allowed_fails high so only the rate rule can trip
    t = CooldownTracker(CooldownPolicy(allowed_fails=100), clock=clock)
    for ok in (True, False, True, False):
        assert t.record("m", success=ok) is None
    st = t.record("m", success=False)  # 3 of 5 failed
    assert st is not None and st.reason == "3 of 5 calls failed in 60 s"


def test_exactly_half_does_not_cool() -> None:
    t = CooldownTracker(CooldownPolicy(allowed_fails=100), clock=Clock())
    for ok in (True, False, True, False, True, False):
        assert t.record("m", success=ok) is None
    assert t.available("m")


def test_uncounted_failures_never_cool() -> None:
    t = CooldownTracker(clock=Clock())
    for _ in range(10):
        assert t.record("m", success=False, counted=False) is None
    assert t.available("m") and t.states() == []


def test_half_open_lets_exactly_one_probe_through_and_success_closes(events: Any) -> None:
    clock = Clock()
    t = CooldownTracker(clock=clock)
    for _ in range(3):
        t.record("m", success=False)
    clock.t += 4.9
    assert not t.available("m") and not t.acquire("m")
    clock.t += 0.1
    assert t.available("m")
    assert t.acquire("m")  # the probe
    assert not t.available("m") and not t.acquire("m")  # one at a time
    assert t.states()[0].phase is Phase.HALF_OPEN and t.states()[0].probe_in_flight
    t.record("m", success=True)
    assert t.available("m") and t.states() == []
    assert [e[0] for e in events if e[0] != "cooldowns"] == ["start", "half_open", "end"]
    assert events[-1] == ("cooldowns", {"cooling": 0}, {})


def test_failed_probe_cools_twice_as_long_up_to_the_cap() -> None:
    clock = Clock()
    t = CooldownTracker(CooldownPolicy(cooldown_s=5, max_cooldown_s=12), clock=clock)
    for _ in range(3):
        t.record("m", success=False)
    durations = []
    for _ in range(3):
        st = t.state("m")
        assert st is not None
        durations.append(st.until_s - st.since_s)
        clock.t = st.until_s
        assert t.acquire("m")
        t.record("m", success=False)
    assert durations == [5, 10, 12]
    st = t.state("m")
    assert st is not None and st.reason == "half-open probe failed" and st.cooldowns == 4


def test_a_failure_while_cooling_extends_the_deadline(events: Any) -> None:
    clock = Clock()
    t = CooldownTracker(clock=clock)
    for _ in range(3):
        t.record("m", success=False)
    clock.t += 3
    st = t.record("m", success=False)  # a call that was in flight when the cooldown began
    assert st is not None and st.until_s == clock.t + 5
    assert any(e[0] == "extended" for e in events)
    assert t.record("m", success=True) is None  # a late success changes nothing
    assert not t.available("m")


def test_probe_that_never_reports_frees_its_slot() -> None:
    clock = Clock()
    t = CooldownTracker(CooldownPolicy(probe_timeout_s=2), clock=clock)
    for _ in range(3):
        t.record("m", success=False)
    clock.t += 5
    assert t.acquire("m")
    clock.t += 1.9
    assert not t.acquire("m")
    clock.t += 0.1
    assert t.acquire("m")


def test_uncounted_probe_failure_frees_the_slot_without_recooling() -> None:
    clock = Clock()
    t = CooldownTracker(clock=clock)
    for _ in range(3):
        t.record("m", success=False)
    clock.t += 5
    assert t.acquire("m")
    t.record("m", success=False, counted=False)  # e.g. a bad request: says nothing
    assert t.acquire("m")
    assert t.state("m").phase is Phase.HALF_OPEN  # type: ignore[union-attr]


def test_the_last_model_is_never_cooled(events: Any) -> None:
    clock = Clock()
    t = CooldownTracker(clock=clock, can_cool=lambda name: name != "last")
    for _ in range(10):
        assert t.record("last", success=False) is None
    assert t.available("last") and t.states() == []
    skipped = [e for e in events if e[0] == "skipped"]
    assert len(skipped) == 1 and skipped[0][2]["model"] == "last"  # reported once per window
    clock.t += 61
    t.record("last", success=False)
    t.record("last", success=False)
    t.record("last", success=False)
    assert len([e for e in events if e[0] == "skipped"]) == 2


def test_trial_slots_are_spaced_and_single() -> None:
    clock = Clock()
    t = CooldownTracker(CooldownPolicy(trial_interval_s=1.0), clock=clock)
    assert t.try_trial("m")
    assert not t.try_trial("m")
    t.record("m", success=True)
    assert not t.try_trial("m")  # within the interval
    clock.t += 1.0
    assert t.try_trial("m")


def test_reset_and_bad_policies() -> None:
    t = CooldownTracker(clock=Clock())
    for _ in range(3):
        t.record("m", success=False)
    t.reset("m")
    assert t.available("m")
    for bad in ({"cooldown_s": 0}, {"max_cooldown_s": 1}, {"allowed_fails": 0}, {"failure_rate": 1.0},
                {"buckets": 0}, {"window_s": -1}):
        with pytest.raises(ValueError):
            CooldownPolicy(**bad)
