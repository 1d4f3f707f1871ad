"""RolloutSpec defaults, validation and persistence; start_rollout's checks."""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable
from typing import Any

import pytest
from dspex.pipelines.rollouts import (
    CanaryTest,
    Phase,
    RolloutSpec,
    Strategy,
    Webhook,
    error_rate,
    non_inferiority,
    p95_latency,
    start_rollout,
)

from dspex.errors import DeploymentError, ValidationError


def test_defaults_match_the_issue() -> None:
    spec = RolloutSpec()
    assert spec.strategy is Strategy.CANARY
    assert spec.interval_s == 60.0
    assert spec.step_weights == (5.0, 10.0, 25.0, 50.0, 100.0)
    assert spec.threshold == 2
    assert spec.progress_deadline_s == 600.0
    assert spec.gates == () and spec.webhooks == () and spec.canary_test is None


def test_strategy_accepts_its_string_form() -> None:
    assert RolloutSpec(strategy="blue_green").strategy is Strategy.BLUE_GREEN  # type: ignore[arg-type]


def test_short_intervals_need_the_explicit_test_flag() -> None:
    with pytest.raises(ValidationError, match="at least 10 s") as info:
        RolloutSpec(interval_s=5)
    assert info.value.field == "interval_s"
    spec = RolloutSpec(interval_s=0.5, progress_deadline_s=5, allow_short_interval=True)
    assert spec.interval_s == 0.5
    with pytest.raises(ValidationError, match=r"at least 0\.05 s"):
        RolloutSpec(interval_s=0.01, allow_short_interval=True)


BAD_SPECS: dict[str, tuple[Callable[[], Any], str]] = {
    "unknown strategy": (lambda: RolloutSpec(strategy="dark_launch"), "strategy"),  # type: ignore[arg-type]
    "interval not a number": (lambda: RolloutSpec(interval_s="60"), "interval_s"),  # type: ignore[arg-type]
    "interval nan": (lambda: RolloutSpec(interval_s=float("nan")), "interval_s"),
    "no steps": (lambda: RolloutSpec(step_weights=()), "step_weights"),
    "step over 100": (lambda: RolloutSpec(step_weights=(50, 150)), "step_weights"),
    "zero step": (lambda: RolloutSpec(step_weights=(0, 50, 100)), "step_weights"),
    "steps not increasing": (lambda: RolloutSpec(step_weights=(10, 10, 100)), "step_weights"),
    "steps decreasing": (lambda: RolloutSpec(step_weights=(50, 25)), "step_weights"),
    "steps not numbers": (lambda: RolloutSpec(step_weights=("a",)), "step_weights"),  # type: ignore[arg-type]
    "threshold zero": (lambda: RolloutSpec(threshold=0), "threshold"),
    "threshold bool": (lambda: RolloutSpec(threshold=True), "threshold"),
    "threshold float": (lambda: RolloutSpec(threshold=2.5), "threshold"),  # type: ignore[arg-type]
    "deadline below interval": (
        lambda: RolloutSpec(interval_s=60, progress_deadline_s=30),
        "progress_deadline_s",
    ),
    "iterations zero": (lambda: RolloutSpec(iterations=0), "iterations"),
    "negative scale-down delay": (lambda: RolloutSpec(scale_down_delay_s=-1), "scale_down_delay_s"),
    "negative rollback window": (lambda: RolloutSpec(rollback_window=-1), "rollback_window"),
    "duplicate gates": (lambda: RolloutSpec(gates=(error_rate(0.05), error_rate(0.1))), "gates"),
    "webhook not http": (lambda: Webhook(name="w", url="ftp://x/y"), "webhooks.url"),
    "webhook without host": (lambda: Webhook(name="w", url="http:///x"), "webhooks.url"),
    "webhook with credentials": (
        lambda: Webhook(name="w", url="https://u:pw@hooks.example/x"),
        "webhooks.url",
    ),
    "webhook with url and url_env": (
        lambda: Webhook(name="w", url="https://a.example", url_env="HOOK_URL"),
        "webhooks.url",
    ),
    "webhook without url": (lambda: Webhook(name="w"), "webhooks.url"),
    "credentials in a non-http url": (
        lambda: Webhook(name="w", url="ftp://u:pw@x.example/"),
        "webhooks.url",
    ),
    "webhook unknown event": (
        lambda: Webhook(name="w", url="https://hooks.example/x", events=("exploded",)),
        "webhooks.events",
    ),
    "duplicate webhooks": (
        lambda: RolloutSpec(
            webhooks=(
                Webhook(name="w", url="https://a.example"),
                Webhook(name="w", url="https://b.example"),
            )
        ),
        "webhooks",
    ),
    "canary test without devset": (
        lambda: CanaryTest(devset="", min_score=0.5),
        "canary_test.devset",
    ),
    "canary test nan score": (
        lambda: CanaryTest(devset="dev", min_score=float("nan")),
        "canary_test.min_score",
    ),
}


@pytest.mark.parametrize("case", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_specs_are_refused_with_the_field_named(case: tuple[Callable[[], Any], str]) -> None:
    build, field = case
    with pytest.raises(ValidationError) as info:
        build()
    err = info.value
    assert err.field == field
    assert err.message.startswith("Invalid rollout spec:")
    assert "pw" not in err.message  # a credential in a URL is not echoed back
    assert pickle.loads(pickle.dumps(err)).field == field


def test_blue_green_and_rolling_ignore_step_weights() -> None:
    assert RolloutSpec(strategy=Strategy.BLUE_GREEN, step_weights=()).step_weights == ()


def full_spec() -> RolloutSpec:
    return RolloutSpec(
        strategy=Strategy.CANARY,
        interval_s=30,
        step_weights=(10, 50, 100),
        threshold=3,
        progress_deadline_s=300,
        gates=(
            error_rate(0.05, failure_limit=1),
            p95_latency(800),
            non_inferiority(0.02, min_pairs=100),
        ),
        webhooks=(
            Webhook(name="slack", url_env="SLACK_HOOK_URL", events=("rolled_back",)),
            Webhook(
                name="chat",
                url="https://hooks.example/rollouts",
                events=("promoted", "rolled_back"),
                secret_env="HOOK_TOKEN",
            ),
        ),
        canary_test=CanaryTest(devset="qa-dev-v1", min_score=0.7, max_examples=50),
        iterations=4,
        scale_down_delay_s=12,
        rollback_window=2,
    )


def test_spec_round_trips_through_json() -> None:
    spec = full_spec()
    data = json.loads(json.dumps(spec.to_dict()))
    test = lambda *a: True  # noqa: E731
    back = RolloutSpec.from_dict(data, non_inferiority_test=test)
    assert back == spec
    assert back.shadow_gates[0].test is test


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("threshold"), "threshold"),
        (lambda d: d.update(strategy="dark"), "strategy"),
        (lambda d: d.update(gates="error_rate"), "gates"),
        (lambda d: d.update(interval_s="60"), "interval_s"),
    ],
)
def test_corrupt_spec_dicts_name_the_field(
    mutate: Callable[[dict[str, Any]], Any], field: str
) -> None:
    data = full_spec().to_dict()
    mutate(data)
    with pytest.raises(ValidationError, match=field) as info:
        RolloutSpec.from_dict(data)
    assert "corrupt" in info.value.message


def test_start_rollout() -> None:
    state = start_rollout(RolloutSpec(), program="qa", canary=7, champion=6, now=100.0)
    assert state.phase is Phase.INITIALIZING
    assert (state.canary, state.champion, state.step_index, state.weight) == (7, 6, -1, 0.0)
    assert state.started_at == state.progress_at == state.window_start_s == 100.0
    assert state.rollout_id == "qa:7@100"
    assert not state.fast_track


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"canary": 6, "champion": 6}, DeploymentError, "already the champion"),
        ({"canary": 7, "champion": None}, DeploymentError, "needs a champion"),
        ({"canary": 7, "champion": 6, "program": ""}, ValidationError, "program"),
        ({"canary": "7", "champion": 6}, ValidationError, "canary must be an integer"),
        ({"canary": 7, "champion": True}, ValidationError, "champion must be an integer"),
    ],
)
def test_start_rollout_refuses(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    args: dict[str, Any] = {"program": "qa", "now": 0.0, **kwargs}
    with pytest.raises(error, match=match):
        start_rollout(RolloutSpec(), **args)


def test_rolling_cannot_use_shadow_gates_and_first_version_must_be_immediate() -> None:
    with pytest.raises(DeploymentError, match="rolling update replaces it"):
        start_rollout(
            RolloutSpec(strategy=Strategy.ROLLING, gates=(non_inferiority(0.02),)),
            program="qa",
            canary=2,
            champion=1,
            now=0,
        )
    first = start_rollout(
        RolloutSpec(strategy=Strategy.IMMEDIATE), program="qa", canary=1, champion=None, now=0
    )
    assert first.champion is None and first.strategy is Strategy.IMMEDIATE


@pytest.mark.parametrize(
    ("recent", "window", "fast"),
    [
        ((5, 4, 3), 3, True),
        ((5, 4, 3), 2, True),
        ((5, 6, 4), 2, False),
        ((), 3, False),
        ((5, 4), 0, False),
    ],
)
def test_rollback_window_fast_tracks_recent_versions(
    recent: tuple[int, ...], window: int, fast: bool
) -> None:
    spec = RolloutSpec(rollback_window=window, canary_test=CanaryTest(devset="dev", min_score=0.9))
    state = start_rollout(spec, program="qa", canary=4, champion=7, now=0, recent_versions=recent)
    assert state.fast_track is fast and state.skip_analysis is fast
    assert state.strategy is (Strategy.IMMEDIATE if fast else Strategy.CANARY)


def test_the_package_is_pure_and_its_exports_resolve() -> None:
    import subprocess
    import sys

    import dspex.pipelines.rollouts as rollouts

    assert sorted(rollouts.__all__) == rollouts.__all__
    assert all(hasattr(rollouts, name) for name in rollouts.__all__)
    code = "import sys, dspex.pipelines.rollouts; print(sorted(m for m in ('ray', 'sqlalchemy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
