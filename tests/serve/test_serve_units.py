"""The Serve layer's pure parts: routing, admin auth, error mapping, the OpenAI facade, specs,
options and the config file. No Ray here."""

from __future__ import annotations

import hashlib
import pickle
import random
from collections import Counter

import pytest
import yaml
from dspex.cluster.serve import (
    RouteSet,
    ServedRoute,
    ServeOptions,
    admin_denial,
    http_error,
    plan_from_config,
    spec_from_config,
    sticky_point,
    token_sha256,
)
from dspex.cluster.serve.build import serve_config
from dspex.cluster.serve.openai_facade import chunk_body, completion_body, inputs_from_messages

from dspex.errors import (
    ConfigurationError,
    DeploymentError,
    NotFound,
    Overloaded,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    ValidationError,
)


def routes(*items: tuple[int | str, float], epoch: int = 1) -> RouteSet:
    return RouteSet("qa", epoch, tuple(ServedRoute(v, w, (f"v{v}-x",)) for v, w in items))


# -- routing -----------------------------------------------------------------------------------
def test_random_draws_follow_the_weights() -> None:
    rs = routes((1, 90.0), (2, 10.0))
    rng = random.Random(7)
    counts = Counter(rs.choose(rng=rng).version for _ in range(20_000))
    assert abs(counts[2] / 20_000 - 0.10) < 0.01


def test_sticky_keys_keep_their_version_and_split_by_weight() -> None:
    rs = routes((1, 70.0), (2, 30.0))
    keys = [f"user-{i}" for i in range(5000)]
    first = {k: rs.choose(key=k).version for k in keys}
    assert all(rs.choose(key=k, rng=random.Random(i)).version == first[k] for i, k in enumerate(keys))
    assert abs(Counter(first.values())[2] / len(keys) - 0.30) < 0.03


def test_growing_canary_moves_keys_only_from_old_to_new() -> None:
    keys = [f"s{i}" for i in range(3000)]
    before = {k: routes((1, 90.0), (2, 10.0)).choose(key=k).version for k in keys}
    after = {k: routes((1, 50.0), (2, 50.0)).choose(key=k).version for k in keys}
    assert all(after[k] == 2 for k in keys if before[k] == 2)
    assert sum(1 for k in keys if before[k] == 1 and after[k] == 2) > 900


def test_sticky_point_is_stable_and_uniform() -> None:
    assert sticky_point("alice") == sticky_point("alice")  # the same in every process
    expected = int.from_bytes(hashlib.blake2b(b"alice", digest_size=8).digest(), "big") / 2.0**64
    assert sticky_point("alice") == expected
    points = [sticky_point(str(i)) for i in range(10_000)]
    assert 0.0 <= min(points) and max(points) < 1.0
    assert abs(sum(p < 0.5 for p in points) / len(points) - 0.5) < 0.02


def test_pinned_version_even_at_zero_weight_and_unknown_pin() -> None:
    rs = routes((1, 100.0), ("canary", 0.0))
    assert rs.choose(pin="canary").version == "canary"
    assert rs.choose(pin="1").version == 1  # header text matches an int version
    with pytest.raises(NotFound, match="not deployed"):
        rs.choose(pin="9")


def test_no_live_version_is_a_deployment_error() -> None:
    with pytest.raises(DeploymentError, match="no version taking traffic"):
        RouteSet("qa").choose()
    with pytest.raises(DeploymentError):
        routes((1, 0.0)).choose()


def test_user_config_round_trip_and_epoch_order() -> None:
    rs = routes((1, 90.0), ("b", 10.0), epoch=4)
    back = RouteSet.from_config("qa", rs.to_config())
    assert back == rs
    assert RouteSet.from_config("qa", None).epoch == -1
    older = routes((1, 100.0), epoch=3)
    assert rs.newer(older) is rs and older.newer(rs) is rs
    with pytest.raises(DeploymentError, match="malformed"):
        RouteSet.from_config("qa", {"epoch": 1, "routes": [{"version": 1}]})


def test_from_table_uses_the_serve_deployment_names() -> None:
    from dspex.actors.routing import Replica, Route, RoutingTable
    from dspex.cluster.serve.graph import ServeVersionHandle

    handle = ServeVersionHandle("qa", "qa", "pid-1", deployment="v1-abc")
    table = RoutingTable("qa", 7, (Route(1, 100.0, (Replica("pid-1", handle),)), Route(2, 0.0, (Replica("pid-2", object()),))))
    rs = RouteSet.from_table(table)
    assert rs.epoch == 7
    assert rs.routes[0].deployments == ("v1-abc",) and rs.routes[1].deployments == ("pid-2",)
    pickle.loads(pickle.dumps(handle))  # the handle travels in routing tables


# -- admin auth --------------------------------------------------------------------------------
def test_admin_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("T_ADMIN", "s3cret-token")
    assert admin_denial("Bearer s3cret-token", env_var="T_ADMIN", token_sha256_hex=None) is None
    for header in (None, "", "Bearer", "Basic s3cret-token", "Bearer wrong"):
        reason = admin_denial(header, env_var="T_ADMIN", token_sha256_hex=None)
        assert reason and "s3cret" not in reason


def test_admin_token_digest_and_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("T_ADMIN", raising=False)
    digest = token_sha256("tok")
    assert admin_denial("Bearer tok", env_var="T_ADMIN", token_sha256_hex=digest) is None
    assert admin_denial("Bearer tik", env_var="T_ADMIN", token_sha256_hex=digest) == "The admin token is not valid."
    assert "disabled" in (admin_denial("Bearer tok", env_var="T_ADMIN", token_sha256_hex=None) or "")


# -- errors to HTTP ------------------------------------------------------------------------------
def test_error_mapping() -> None:
    over = http_error(Overloaded("full", predictor="p"), retry_after_s=2)
    assert over.status == 503 and over.headers == {"Retry-After": "2"}
    assert http_error(RateLimited("slow down", retry_after_s=7.2)).headers == {"Retry-After": "8"}
    assert http_error(ProviderUnavailable("down")).status == 503
    assert http_error(ProviderTimeout("late")).status == 504
    assert http_error(ValidationError("bad", field="x", constraint="y")).status == 422
    assert http_error(NotFound("nope")).status == 404
    assert http_error(DeploymentError("no version")).status == 503
    internal = http_error(RuntimeError("key=sk-123 leaked?"))
    assert internal.status == 500 and "sk-123" not in internal.message
    assert internal.body()["error"]["type"] == "internal_error"


def test_serve_backpressure_maps_to_503_with_retry_after() -> None:
    from ray.serve.exceptions import BackPressureError

    err = http_error(BackPressureError(num_queued_requests=10, max_queued_requests=10), retry_after_s=3)
    assert err.status == 503 and err.headers["Retry-After"] == "3"


# -- OpenAI facade ---------------------------------------------------------------------------------
def test_messages_to_inputs() -> None:
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "old"}, {"role": "user", "content": "2+2?"}]
    assert inputs_from_messages(msgs, ["question"]) == {"question": "2+2?"}
    parts = [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    assert inputs_from_messages(parts, ["question"]) == {"question": "ab"}
    js = [{"role": "user", "content": '{"question": "q", "context": "c"}'}]
    assert inputs_from_messages(js, ["question", "context"]) == {"question": "q", "context": "c"}
    # a JSON object whose keys are not input fields is just text
    assert inputs_from_messages([{"role": "user", "content": '{"x": 1}'}], ["question"]) == {"question": '{"x": 1}'}
    with pytest.raises(ValidationError):
        inputs_from_messages([], ["question"])
    with pytest.raises(ValidationError):
        inputs_from_messages([{"role": "system", "content": "x"}], ["question"])


def test_outputs_to_completion() -> None:
    one = completion_body("qa", {"answer": "4"})
    assert one["choices"][0]["message"] == {"role": "assistant", "content": "4"}
    assert one["object"] == "chat.completion" and one["model"] == "qa"
    cot = completion_body("qa", {"reasoning": "2+2", "answer": "4"})
    assert cot["choices"][0]["message"]["content"] == "4"
    many = completion_body("qa", {"answer": "4", "confidence": 0.9})
    assert yaml.safe_load(many["choices"][0]["message"]["content"]) == {"answer": "4", "confidence": 0.9}
    assert completion_body("qa", {"answer": "4"}, json_mode=True)["choices"][0]["message"]["content"] == '{"answer": "4"}'
    chunk = chunk_body("qa", "r1", content="4")
    assert chunk["choices"][0]["delta"] == {"content": "4"} and chunk["object"] == "chat.completion.chunk"


# -- options, specs, plans ------------------------------------------------------------------------------
def test_options_validate_and_round_trip() -> None:
    o = ServeOptions(route_prefix="/qa", sticky_headers=("X-User",))
    assert ServeOptions.from_dict(o.to_dict()) == o
    assert o.sticky_headers == ("x-user",) and o.prefix == "/qa"
    assert o.max_ongoing_requests == 256  # not Serve's 5 (notes/ray-measured.md)
    for bad in ({"max_ongoing_requests": 0}, {"min_replicas": 3, "max_replicas": 2}, {"route_prefix": "qa"}):
        with pytest.raises(ConfigurationError):
            ServeOptions(**bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="Unknown serve option"):
        ServeOptions.from_dict({"max_ongoing": 3})


def test_spec_from_config(tmp_path: pytest.TempPathFactory) -> None:
    spec = spec_from_config("qa", {"version": 3, "factory": "fixtures.serve:qa_program", "lm": {"model": "openai/sim-small"},
                                   "adapter": "json", "max_in_flight": 8})
    assert spec.version == 3 and spec.max_in_flight == 8 and spec.lm.model == "openai/sim-small"
    assert spec.build().signature.output_fields.keys() == {"answer"}
    with pytest.raises(ConfigurationError, match="api_key_env"):
        spec_from_config("qa", {"version": 1, "factory": "fixtures.serve:qa_program", "lm": {"model": "m", "api_key": "sk"}})
    with pytest.raises(ConfigurationError, match="Cannot import"):
        spec_from_config("qa", {"version": 1, "factory": "no_such_mod:x"})
    with pytest.raises(ConfigurationError, match="Unknown key"):
        spec_from_config("qa", {"version": 1, "factory": "fixtures.serve:qa_program", "weight": 3})
    with pytest.raises(ConfigurationError, match="adapter"):
        spec_from_config("qa", {"version": 1, "factory": "fixtures.serve:qa_program", "adapter": "xml"})


def test_plan_from_config() -> None:
    assert plan_from_config(None).steps == (100.0,)
    plan = plan_from_config({"strategy": "staged", "steps": [10, 100], "step_s": 2, "health": {"window_s": 5, "min_samples": 3}})
    assert plan.steps == (10.0, 100.0) and plan.health.min_samples == 3
    with pytest.raises(ConfigurationError):
        plan_from_config({"strategy": "yolo"})
    with pytest.raises(ConfigurationError):
        plan_from_config({"strategy": "staged", "stepz": 1})


# -- the config file -----------------------------------------------------------------------------------------
def test_serve_config_shape_and_no_secrets() -> None:
    from ray.serve.schema import ServeDeploySchema

    programs = [
        {"program": "qa", "versions": [{"version": 1, "factory": "fixtures.serve:qa_program"}], "options": {"route_prefix": "/qa"}},
        {"program": "cot", "versions": [{"version": 1, "factory": "fixtures.serve:qa_program"}], "options": {"route_prefix": "/cot"}},
    ]
    config = serve_config(programs, wheel="/tmp/dspex-0.1.0-py3-none-any.whl", http_port=8123)
    ServeDeploySchema.model_validate(config)  # Serve accepts it
    app = config["applications"][0]
    assert app["import_path"] == "dspex.cluster.serve.app:build_app" and app["route_prefix"] == "/qa"
    assert app["runtime_env"]["py_modules"] == ["file:///tmp/dspex-0.1.0-py3-none-any.whl"]
    remote = serve_config(programs[:1], wheel="https://example.test/w/dspex-0.1.0-py3-none-any.whl")
    assert remote["applications"][0]["runtime_env"]["py_modules"][0].startswith("https://")
    leaky = [{"program": "qa", "versions": [{"version": 1, "factory": "m:f", "lm": {"model": "x", "api_key": "sk-1"}}]}]
    with pytest.raises(ConfigurationError, match="secret") as info:
        serve_config(leaky, wheel=None)
    assert "sk-1" not in str(info.value)
    with pytest.raises(ConfigurationError, match="route prefix"):
        serve_config([programs[0], {**programs[1], "options": {"route_prefix": "/qa"}}], wheel=None)
