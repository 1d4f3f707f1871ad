"""Config files, the rate window on an injected clock, the CLI, and the subprocess mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from dspex.errors import ConfigurationError
from dspex.sim import FaultSpec, ModelSpec, SimConfig, SimProcess
from dspex.sim.__main__ import main
from dspex.sim.state import RateWindow, SimState


def test_default_config_has_a_real_tradeoff() -> None:
    cfg = SimConfig.default()
    assert [m.name for m in cfg.models] == ["sim-small", "sim-medium", "sim-large"]
    skills = [m.skill for m in cfg.models]
    latencies = [m.latency.base_ms for m in cfg.models]
    prices = [m.price.input_per_1m_usd for m in cfg.models]
    assert skills == sorted(skills) and latencies == sorted(latencies) and prices == sorted(prices)
    fast = SimConfig.for_tests()
    assert (
        fast.model("sim-small-fast").latency.base_ms == 0
        and fast.model("sim-small-fast").skill == cfg.model("sim-small").skill
    )


def test_config_loads_from_yaml_and_json(tmp_path: Path) -> None:
    data = {
        "seed": 4,
        "api_keys": ["k1"],
        "models": [
            {
                "name": "a",
                "skill": 0.4,
                "latency": {"base_ms": 10},
                "faults": {"error_rate": 0.1, "rpm_limit": 60},
            }
        ],
    }
    y = tmp_path / "sim.yaml"
    y.write_text(yaml.safe_dump(data))
    j = tmp_path / "sim.json"
    j.write_text(json.dumps(data))
    for path in (y, j):
        cfg = SimConfig.load(path)
        assert cfg.seed == 4 and cfg.model("a").faults.rpm_limit == 60 and cfg.api_keys == ["k1"]
    assert "k1" not in json.dumps(cfg.public_dict())
    round_trip = tmp_path / "dump.yaml"
    round_trip.write_text(SimConfig.default().dump_yaml())
    assert SimConfig.load(round_trip) == SimConfig.default()


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("models: [{name: a, skill: 1.5}]", "skill"),
        ("models: [{name: a, skill: 0.5}, {name: a, skill: 0.2}]", "unique"),
        ("models: []", "models"),
        ("models: [{name: a, skill: 0.5, faults: {error_rate: -1}}]", "error_rate"),
        ("models: [{name: a, skill: 0.5, wat: 1}]", "wat"),
        ("- just a list", "mapping"),
        ("models: [unclosed", "not valid YAML"),
    ],
)
def test_bad_configs_name_the_problem(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(ConfigurationError, match=needle):
        SimConfig.load(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Cannot read"):
        SimConfig.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigurationError, match="no model"):
        SimConfig.default().model("gpt-4")


def test_rate_window_on_an_injected_clock() -> None:
    w = RateWindow(window_s=60)
    assert [w.try_admit(3, t) for t in (0.0, 1.0, 2.0)] == [None, None, None]
    assert w.try_admit(3, 10.0) == pytest.approx(50.0)  # the first slot frees at t=60
    assert w.try_admit(3, 60.5) is None
    assert w.used(60.5) == 3
    assert w.try_admit(None, 61.0) is None  # no limit: always admitted


def test_fault_decisions_follow_the_spec_in_order() -> None:
    now = [0.0]
    cfg = SimConfig(
        models=[ModelSpec(name="m", skill=0.5, faults=FaultSpec(rpm_limit=2, outage=True))]
    )
    state = SimState(cfg, clock=lambda: now[0])
    rt = state.models["m"]
    assert state.decide(rt).kind == "outage"
    state.set_faults("m", {"outage": False})
    assert [state.decide(rt).kind for _ in range(3)] == [None, None, "rate_limited"]
    now[0] = 61.0
    assert state.decide(rt).kind is None
    state.set_faults("m", {"rpm_limit": None, "error_rate": 1.0, "error_status": 502})
    d = state.decide(rt)
    assert (d.kind, d.status) == ("error", 502)
    state.reset()  # back to the configured faults (an outage) and empty rate windows
    assert rt.faults == cfg.model("m").faults
    assert state.decide(rt).kind == "outage"
    with pytest.raises(Exception, match="no model"):
        state.set_faults("nope", {"outage": False})


def test_cli_prints_config_and_tasks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["models"][0]["name"] == "sim-small"
    assert main(["tasks", "--show", "1"]) == 0
    out = capsys.readouterr().out
    assert "arithmetic" in out and "multihop" in out and "(ref " in out


def test_cli_reports_a_bad_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    r = subprocess.run(
        [sys.executable, "-m", "dspex.sim", "serve", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and "models" in r.stderr


def test_subprocess_mode_serves_and_stops() -> None:
    cfg = SimConfig(models=[ModelSpec(name="p", skill=0.5)])
    with SimProcess(cfg) as sim:
        assert sim.port > 0
        r = httpx.post(
            sim.openai_base_url + "/chat/completions",
            json={"model": "p", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert r.status_code == 200
        sim.set_faults("p", error_rate=1.0)
        assert (
            httpx.post(
                sim.openai_base_url + "/chat/completions",
                json={"model": "p", "messages": [{"role": "user", "content": "hi"}]},
            ).status_code
            == 500
        )
        assert sim.model_stats("p")["requests"] == 2
        url = sim.base_url
        proc = sim._proc
    assert proc is not None and proc.poll() is not None  # the child exited
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=1)


def test_latency_has_base_per_token_and_bounded_jitter() -> None:
    spec = ModelSpec(
        name="m", skill=0.5, latency={"base_ms": 100, "per_output_token_ms": 2, "jitter_ms": 50}
    )
    state = SimState(SimConfig(models=[spec]))
    rt = state.models["m"]
    draws = [state.latency_s(rt, 10) for _ in range(400)]
    assert all(0.12 <= d <= 0.17 for d in draws)
    assert max(draws) - min(draws) > 0.04  # the jitter spreads over its range
    state.set_faults("m", {"extra_latency_ms": 1000})
    assert state.latency_s(rt, 0) >= 1.1
