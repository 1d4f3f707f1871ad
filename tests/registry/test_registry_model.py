"""The model's status machine, health status, cost estimate, moving averages and secret checks."""

from __future__ import annotations

import pickle

import pytest

from dspex.errors import ConfigurationError, InvalidTransition, ValidationError
from dspex.registry import HealthStatus, Model, ModelStatus
from dspex.registry.model import (
    allowed_events,
    check_base_url,
    check_config,
    check_secret_ref,
    next_status,
)

T, A, D, E = ModelStatus.TESTING, ModelStatus.AVAILABLE, ModelStatus.DEPRECATED, ModelStatus.ERROR

# every (status, event) pair: the next status, or None when the event is illegal there
TRANSITIONS = [
    (T, "approve", A), (T, "deprecate", D), (T, "error", E), (T, "retest", None),
    (A, "approve", None), (A, "deprecate", D), (A, "error", E), (A, "retest", None),
    (D, "approve", None), (D, "deprecate", None), (D, "error", None), (D, "retest", T),
    (E, "approve", None), (E, "deprecate", None), (E, "error", None), (E, "retest", T),
]


@pytest.mark.parametrize(("status", "event", "after"), TRANSITIONS)
def test_every_transition(status: ModelStatus, event: str, after: ModelStatus | None) -> None:
    if after is not None:
        assert next_status(status, event) is after
        return
    with pytest.raises(InvalidTransition) as info:
        next_status(status, event)
    err = info.value
    assert err.state == status.value and err.event == event
    assert err.allowed == allowed_events(status)
    assert status.value in str(err) and "allowed" in str(err)
    for ev in err.allowed:
        assert ev in str(err)
    again = pickle.loads(pickle.dumps(err))
    assert (again.state, again.event, again.allowed, str(again)) == (err.state, err.event, err.allowed, str(err))


def test_unknown_event_lists_the_allowed_ones() -> None:
    with pytest.raises(InvalidTransition, match="approve, deprecate, error"):
        next_status(T, "launch")


NOW = 10_000.0
HEALTH = [
    # last probe, last call, success rate -> health (stale after 600 s)
    (None, None, None, HealthStatus.UNKNOWN),
    (None, None, 1.0, HealthStatus.UNKNOWN),
    (NOW - 601, None, 1.0, HealthStatus.STALE),
    (NOW - 601, NOW - 10, 1.0, HealthStatus.HEALTHY),  # a real call counts as an observation
    (NOW - 10, None, 0.96, HealthStatus.HEALTHY),
    (NOW - 10, None, 0.95, HealthStatus.DEGRADED),
    (NOW - 10, None, 0.81, HealthStatus.DEGRADED),
    (NOW - 10, None, 0.80, HealthStatus.UNHEALTHY),
    (NOW - 10, None, 0.0, HealthStatus.UNHEALTHY),
    (NOW - 10, None, None, HealthStatus.UNHEALTHY),
    (NOW, None, 1.0, HealthStatus.HEALTHY),
    (NOW - 600, None, 1.0, HealthStatus.HEALTHY),
]


@pytest.mark.parametrize(("probe", "call", "rate", "want"), HEALTH)
def test_health_status(probe: float | None, call: float | None, rate: float | None, want: HealthStatus) -> None:
    m = Model("m", "openai", "x", last_health_check_s=probe, last_call_s=call, success_rate=rate)
    assert m.health_status(NOW, stale_after_s=600) is want


def test_estimate_cost_uses_input_and_output_prices() -> None:
    m = Model("m", "openai", "x", input_price_per_1m_usd=2.0, output_price_per_1m_usd=8.0)
    est = m.estimate_cost("x" * 400)  # 100 tokens in, 256 out by default
    assert (est.input_tokens, est.output_tokens, est.currency) == (100, 256, "USD")
    assert est.cost_usd == pytest.approx((100 * 2 + 256 * 8) / 1e6)
    assert m.estimate_cost("abc", output_tokens=0).cost_usd == pytest.approx(1 * 2 / 1e6)
    capped = Model("m", "openai", "x", max_tokens=50, output_price_per_1m_usd=1.0)
    assert capped.estimate_cost("").output_tokens == 50
    configured = Model("m", "openai", "x", config={"expected_output_tokens": 10})
    assert configured.estimate_cost("").output_tokens == 10
    with pytest.raises(ValidationError):
        m.estimate_cost(123)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        m.estimate_cost("x", output_tokens=-1)


def test_moving_averages_follow_the_seed() -> None:
    m = Model("m", "openai", "x")
    m.observe(success=True, latency_ms=100.0, now_s=1.0)
    assert (m.average_latency_ms, m.success_rate, m.last_call_s) == (100.0, 1.0, 1.0)
    m.observe(success=True, latency_ms=200.0, now_s=2.0)
    assert m.average_latency_ms == pytest.approx(110.0)  # 0.9 * 100 + 0.1 * 200
    m.observe(success=False, latency_ms=None, now_s=3.0, probe=True)
    assert m.success_rate == pytest.approx(0.9)
    assert m.average_latency_ms == pytest.approx(110.0)  # a failure says nothing about speed
    assert m.last_health_check_s == 3.0 and m.last_call_s == 2.0
    fresh = Model("n", "openai", "x")
    fresh.observe(success=False, latency_ms=None, now_s=1.0)
    assert fresh.success_rate == pytest.approx(0.9)  # presumed working until calls say otherwise


SECRET_REFS_OK = ["OPENAI_API_KEY", "ANTHROPIC_API_KEY", "_X", "MY_KEY_2", "A"]
SECRET_REFS_BAD = [
    "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
    "sk-ant-api03-abcdefghijklmnop",
    "AKIAIOSFODNN7EXAMPLE",
    "hf_abcdefghijklmnopqrstuvwxyz",
    "AIzaSyA1234567890abcdefghijklmnop",
    "Bearer abcdef",
    "gsk_abcdef1234567890",
    "aB3xZ9qL7mN2pR5tV8wY1cE4",  # looks random
    "openai_api_key",  # not upper case
    "MY KEY",
    "1ABC",
    "",
]


@pytest.mark.parametrize("ref", SECRET_REFS_OK)
def test_secret_ref_accepts_environment_variable_names(ref: str) -> None:
    assert check_secret_ref(ref) == ref


@pytest.mark.parametrize("ref", SECRET_REFS_BAD)
def test_secret_ref_refuses_keys_and_never_echoes_them(ref: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_secret_ref(ref)
    if ref:
        assert ref not in str(info.value)
        assert ref not in repr(info.value.to_dict())
    assert "environment variable" in str(info.value)


@pytest.mark.parametrize(
    "url",
    ["https://user:hunter2@api.example.com/v1", "https://api.example.com/v1?api_key=abc123",
     "https://api.example.com/v1?key=abc", "ftp://example.com", "not a url"],
)
def test_base_url_with_credentials_or_nonsense_is_refused(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        check_base_url(url)
    assert "hunter2" not in str(info.value) and "abc123" not in str(info.value)


@pytest.mark.parametrize("key", ["api_key", "API_KEY", "token", "headers", "Authorization", "password"])
def test_config_may_not_hold_secrets(key: str) -> None:
    with pytest.raises(ConfigurationError, match="secret"):
        check_config({key: "value-that-must-not-be-stored"})
    assert check_config({"temperature": 0.2, "timeout_s": 30}) == {"temperature": 0.2, "timeout_s": 30}
