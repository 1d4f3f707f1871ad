"""Selection: every strategy, every condition, the context window, cooldowns, the seed's
fallback to any model, and explain(). Table-driven where the cases are alike."""

from __future__ import annotations

from typing import Any

import pytest

from dspex.errors import RoutingError
from dspex.registry import Model, ModelRegistry, ModelRouter, Strategy


def model(reg: ModelRegistry, name: str, *, approve: bool = True, rate: float | None = 1.0,
          latency_ms: float | None = None, seen: bool = True, **fields: Any) -> Model:
    m = reg.register(name, "openai", name, **fields)
    if approve:
        reg.approve(name)
    m.success_rate = rate
    m.average_latency_ms = latency_ms
    m.last_call_s = reg.clock() if seen else None
    return m


def router(reg: ModelRegistry, clock: Any, **kw: Any) -> ModelRouter:
    return ModelRouter(reg, clock=clock, execution_log=False, **kw)


# -- strategies -----------------------------------------------------------------------------

PRIMARY_CASES = [
    # primary's success rate, observed?, fallback assigned? -> chosen, reason fragment
    (1.0, True, True, "p", "health healthy"),
    (None, False, True, "p", "health unknown"),
    (0.9, True, True, "p", "degraded"),
    (0.5, True, False, "p", "no fallback"),
]


@pytest.mark.parametrize(("rate", "seen", "with_fallback", "want", "why"), PRIMARY_CASES)
def test_primary_strategy(registry: ModelRegistry, clock: Any, rate: float | None, seen: bool,
                          with_fallback: bool, want: str, why: str) -> None:
    model(registry, "p", rate=rate, seen=seen)
    registry.assign("qa", "p", strategy="primary", priority=1)
    if with_fallback:
        model(registry, "f")
        registry.assign("qa", "f", strategy="fallback", priority=9)  # priority does not beat the primary
    r = router(registry, clock)
    requested: list[str] = []
    r.on_check_requested = lambda m: requested.append(m.name)
    route = r.route("qa", {"q": "hi"})
    assert route.chosen is not None and route.chosen.model.name == want
    assert why in route.reason
    assert requested == (["p"] if rate == 0.9 else [])


@pytest.mark.parametrize("trouble", ["unhealthy", "stale"])
def test_primary_in_poor_health_gets_trial_calls_only(registry: ModelRegistry, clock: Any, trouble: str) -> None:
    p = model(registry, "p", rate=0.5 if trouble == "unhealthy" else 1.0)
    if trouble == "stale":
        p.last_call_s = clock() - 601
    model(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    r = router(registry, clock)
    first = r.route("qa", {})
    assert first.chosen is not None and first.chosen.model.name == "p" and "trial" in first.reason
    # the trial is in flight: everyone else goes to the fallback
    for _ in range(3):
        again = r.route("qa", {})
        assert again.chosen is not None and again.chosen.model.name == "f" and trouble in again.reason
    r.cooldowns.record("p", success=True)
    assert r.route("qa", {}).chosen.model.name == "f"  # type: ignore[union-attr]  # at most one trial a second
    clock.advance(1.0)
    assert r.route("qa", {}).chosen.model.name == "p"  # type: ignore[union-attr]


COST_CASES = [
    # (input price, output price) of a and b, input chars, reply tokens -> cheaper
    ((1.0, 1.0), (2.0, 2.0), 400, 0, "a"),
    ((2.0, 2.0), (1.0, 1.0), 400, 0, "b"),
    ((0.1, 10.0), (1.0, 1.0), 40_000, 10, "a"),  # long prompt, short reply: input price decides
    ((0.1, 10.0), (1.0, 1.0), 40, 4000, "b"),  # short prompt, long reply: output price decides
    ((1.0, 1.0), (1.0, 1.0), 400, 0, "a"),  # a tie goes to the higher priority
]


@pytest.mark.parametrize(("pa", "pb", "chars", "reply", "want"), COST_CASES)
def test_cost_optimized_picks_the_cheaper_model_for_this_call(
    registry: ModelRegistry, clock: Any, pa: tuple[float, float], pb: tuple[float, float], chars: int, reply: int,
    want: str,
) -> None:
    model(registry, "a", input_price_per_1m_usd=pa[0], output_price_per_1m_usd=pa[1])
    model(registry, "b", input_price_per_1m_usd=pb[0], output_price_per_1m_usd=pb[1])
    registry.assign("qa", "a", strategy="cost_optimized", priority=2)
    registry.assign("qa", "b", strategy="cost_optimized", priority=1)
    route = router(registry, clock).route("qa", "x" * (chars - 2), output_tokens=reply)
    assert route.chosen is not None and route.chosen.model.name == want
    assert "cheapest" in route.reason


LATENCY_CASES = [((100.0, 200.0), "a"), ((300.0, 200.0), "b"), ((None, 999.0), "b"), ((None, 1001.0), "a")]


@pytest.mark.parametrize(("lat", "want"), LATENCY_CASES)
def test_latency_optimized(registry: ModelRegistry, clock: Any, lat: tuple[float | None, float], want: str) -> None:
    model(registry, "a", latency_ms=lat[0])
    model(registry, "b", latency_ms=lat[1])
    registry.assign("qa", "a", strategy="latency_optimized")
    registry.assign("qa", "b", strategy="latency_optimized")
    assert router(registry, clock).route("qa", {}).chosen.model.name == want  # type: ignore[union-attr]


LB_CASES = [
    # weights, success rates, random draw -> chosen (cumulative shares)
    ((100, 300), (1.0, 1.0), 0.24, "a"),
    ((100, 300), (1.0, 1.0), 0.26, "b"),
    ((100, 100), (1.0, None), 0.66, "a"),  # unmeasured counts as 0.5: shares 2/3 and 1/3
    ((100, 100), (1.0, None), 0.67, "b"),
    ((100, 100), (0.0, 1.0), 0.0, "b"),  # a model with no successes gets nothing
    ((0, 0), (1.0, 1.0), 0.9, "a"),  # all weights 0: highest priority
]


@pytest.mark.parametrize(("weights", "rates", "draw", "want"), LB_CASES)
def test_load_balanced_weight_times_success_rate(
    registry: ModelRegistry, clock: Any, weights: tuple[int, int], rates: tuple[float | None, float | None],
    draw: float, want: str,
) -> None:
    model(registry, "a", rate=rates[0], seen=rates[0] is not None)
    model(registry, "b", rate=rates[1], seen=rates[1] is not None)
    registry.assign("qa", "a", strategy="load_balanced", weight=weights[0], priority=1)
    registry.assign("qa", "b", strategy="load_balanced", weight=weights[1])
    route = router(registry, clock, random=lambda: draw).route("qa", {})
    assert route.chosen is not None and route.chosen.model.name == want


def test_load_balanced_distribution_follows_the_weights(registry: ModelRegistry, clock: Any) -> None:
    import random

    rng = random.Random(7)
    model(registry, "a")
    model(registry, "b")
    registry.assign("qa", "a", strategy="load_balanced", weight=100)
    registry.assign("qa", "b", strategy="load_balanced", weight=300)
    r = router(registry, clock, random=rng.random)
    picks = [r.route("qa", {}).chosen.model.name for _ in range(4000)]  # type: ignore[union-attr]
    assert 0.22 < picks.count("a") / 4000 < 0.28


DISPATCH_CASES = [
    # strategies present (in assignment order) -> which group decides
    (("fallback", "latency_optimized", "cost_optimized"), "cost_optimized"),
    (("load_balanced", "latency_optimized"), "latency_optimized"),
    (("fallback", "load_balanced"), "load_balanced"),
    (("fallback", "fallback"), "fallback"),
    (("cost_optimized", "primary"), "primary"),
]


@pytest.mark.parametrize(("strategies", "winner"), DISPATCH_CASES)
def test_dispatch_order_follows_the_seed(registry: ModelRegistry, clock: Any, strategies: tuple[str, ...],
                                         winner: str) -> None:
    for i, s in enumerate(strategies):
        model(registry, f"m{i}")
        registry.assign("qa", f"m{i}", strategy=s, priority=10 - i)
    route = router(registry, clock, random=lambda: 0.0).route("qa", {})
    assert route.chosen is not None and route.chosen.strategy.value == winner


# -- conditions, status, context window, cooldowns -------------------------------------------

CONDITION_CASES = [
    # conditions on the preferred model, inputs, context -> chosen
    ({"input_size_max": 100}, "x" * 50, {}, "pref"),
    ({"input_size_max": 100}, "x" * 200, {}, "other"),
    ({"context_required": "user_tier"}, "hi", {"user_tier": "gold"}, "pref"),
    ({"context_required": "user_tier"}, "hi", {}, "other"),
    ({"context_required": ["a", "b"]}, "hi", {"a": 1}, "other"),
    ({"context_required": ["a", "b"]}, "hi", {"a": 1, "b": 2}, "pref"),
    ({"cost_limit": 0.01}, "x" * 400, {}, "pref"),  # 100 in + 256 out at $10 / 1M: $0.00356
    ({"cost_limit": 0.001}, "x" * 400, {}, "other"),
    ({"input_size_max": 1000, "cost_limit": 1.0}, "x" * 500, {}, "pref"),
]


@pytest.mark.parametrize(("conditions", "inputs", "context", "want"), CONDITION_CASES)
def test_conditions(registry: ModelRegistry, clock: Any, conditions: dict[str, Any], inputs: Any,
                    context: dict[str, Any], want: str) -> None:
    model(registry, "pref", input_price_per_1m_usd=10, output_price_per_1m_usd=10)
    model(registry, "other")
    registry.assign("qa", "pref", strategy="primary", priority=5, conditions=conditions)
    registry.assign("qa", "other", strategy="fallback", priority=1)
    route = router(registry, clock).route("qa", inputs, context)
    assert route.chosen is not None and route.chosen.model.name == want
    if want == "other":
        assert any(pm.model.name == "pref" for pm, _ in route.skipped)


def test_context_window_rules_out_small_models_reply_included(registry: ModelRegistry, clock: Any) -> None:
    model(registry, "small", context_window=1000)
    model(registry, "big", context_window=100_000)
    registry.assign("qa", "small", strategy="primary", priority=5)
    registry.assign("qa", "big", strategy="fallback")
    r = router(registry, clock)
    assert r.route("qa", "x" * 3000).chosen.model.name == "small"  # type: ignore[union-attr]  # ~750 tokens
    assert r.route("qa", "x" * 3000, output_tokens=300).chosen.model.name == "big"  # type: ignore[union-attr]
    route = r.route("qa", "x" * 8000)
    assert route.chosen is not None and route.chosen.model.name == "big"
    assert "context window 1000" in route.explain()


def test_unavailable_models_are_skipped(registry: ModelRegistry, clock: Any) -> None:
    model(registry, "new", approve=False)
    model(registry, "old")
    registry.deprecate("old")
    model(registry, "ok")
    for name in ("new", "old", "ok"):
        registry.assign("qa", name, priority={"new": 3, "old": 2, "ok": 1}[name])
    route = router(registry, clock).route("qa", {})
    assert route.chosen is not None and route.chosen.model.name == "ok"
    assert [(pm.model.name, why) for pm, why in route.skipped] == [
        ("new", "status is testing"), ("old", "status is deprecated")]


def test_cooling_model_is_skipped_then_half_open_probe(registry: ModelRegistry, clock: Any) -> None:
    model(registry, "p")
    model(registry, "f")
    registry.assign("qa", "p", strategy="primary")
    registry.assign("qa", "f", strategy="fallback")
    r = router(registry, clock)
    for _ in range(3):
        r.cooldowns.record("p", success=False)
    route = r.route("qa", {})
    assert route.chosen is not None and route.chosen.model.name == "f"
    assert "cooling down (3 failures in 60 s; 5.0 s left)" in route.explain()
    clock.advance(5.0)
    assert r.route("qa", {}).chosen.model.name == "p"  # type: ignore[union-attr]  # the one probe
    assert r.route("qa", {}).chosen.model.name == "f"  # type: ignore[union-attr]  # probe in flight


def test_seed_fallback_when_no_assignment_meets_its_conditions(registry: ModelRegistry, clock: Any) -> None:
    model(registry, "a")
    model(registry, "b")
    registry.assign("qa", "a", priority=2, conditions={"context_required": "x"})
    registry.assign("qa", "b", priority=1, conditions={"context_required": "y"})
    route = router(registry, clock).route("qa", {})
    assert route.chosen is not None and route.chosen.model.name == "a"
    assert "no assignment met its conditions" in route.reason


def test_any_available_model_when_no_assigned_model_can_serve(registry: ModelRegistry, clock: Any) -> None:
    model(registry, "assigned")
    registry.deprecate("assigned")
    model(registry, "spare")
    registry.assign("qa", "assigned")
    route = router(registry, clock).route("qa", {})
    assert route.chosen is not None and route.chosen.model.name == "spare" and route.chosen.id == ""
    with pytest.raises(RoutingError, match="No model can serve program 'qa'") as info:
        router(registry, clock, fallback_to_any_model=False).route("qa", {})
    assert "status is deprecated" in str(info.value)


def test_no_assignments_is_a_clear_error(registry: ModelRegistry, clock: Any) -> None:
    with pytest.raises(RoutingError, match="No models are assigned to program 'ghost'"):
        router(registry, clock).route("ghost", {})


def test_explain_says_why_and_changes_nothing(registry: ModelRegistry, clock: Any) -> None:
    model(registry, "cheap", input_price_per_1m_usd=0.1, output_price_per_1m_usd=0.1)
    model(registry, "dear", input_price_per_1m_usd=5, output_price_per_1m_usd=5)
    model(registry, "tiny", context_window=10)
    registry.assign("qa", "cheap", strategy="cost_optimized")
    registry.assign("qa", "dear", strategy="cost_optimized")
    registry.assign("qa", "tiny", strategy="fallback")
    r = router(registry, clock)
    text = r.explain("qa", {"question": "what is 2+2? " * 5})
    assert "-> model 'cheap': cheapest: estimated $" in text
    assert "candidates: 'cheap' (cost_optimized, priority 0), 'dear' (cost_optimized, priority 0)" in text
    assert "ruled out 'tiny' (fallback, priority 0): ~" in text and "context window 10" in text
    assert "on error, in order: 'dear' (" in text
    assert r.cooldowns.states() == []
    assert "No models are assigned" in r.explain("nobody")


def test_select_model_returns_the_assignment(registry: ModelRegistry, clock: Any) -> None:
    model(registry, "a")
    pm = registry.assign("qa", "a", strategy=Strategy.PRIMARY)
    assert router(registry, clock).select_model("qa", {"q": 1}, {}) is pm


@pytest.mark.parametrize(
    "inputs",
    [
        [{"role": "user", "content": "hello"}],
        [{"role": "system", "content": "be brief " * 300}, {"role": "user", "content": "q"},
         {"role": "assistant", "content": "a"}],
        [],
        {"question": "what?", "context": ["a", "b"]},
        [{"role": "user", "content": [{"type": "text", "text": "multimodal"}]}],
        "plain text",
    ],
)
def test_input_size_is_the_json_length(inputs: Any) -> None:
    import json

    from dspex.registry import RouteRequest

    want = len(json.dumps(inputs, ensure_ascii=False))
    got = RouteRequest("p", inputs, {}).input_chars()
    assert abs(got - want) <= 3 * max(1, len(inputs) if isinstance(inputs, list) else 1)
