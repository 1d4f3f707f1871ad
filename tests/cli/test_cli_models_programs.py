"""``dspex models`` and ``dspex programs`` through typer's runner, against a real SQLite store and
the simulated LM server; bad input exits 1 with one sentence and writes nothing."""

from __future__ import annotations

import json
from collections.abc import Callable

from click.testing import Result

from dspex.registry import ModelRegistry
from dspex.sim import SimServer
from dspex.store import Programs, Store

Run = Callable[..., Result]
ErrorOf = Callable[[Result], str]


def test_register_list_health_approve_deprecate(run: Run, error_of: ErrorOf, cli_store: Store, sim: SimServer) -> None:
    r = run("models", "register", "medium", "--provider", "openai", "--model-name", "sim-medium-fast",
            "--base-url", sim.openai_base_url, "--input-price", "1", "--output-price", "4", "--approve")
    assert r.exit_code == 0, r.output
    assert "registered model medium (available); health check passed" in r.stdout
    r = run("models", "register", "gone", "--provider", "openai", "--model-name", "x",
            "--base-url", "http://127.0.0.1:9/v1", "--config", '{"timeout_s": 2}', "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["status"] == "testing" and data["health_check"]["success"] is False
    listed = json.loads(run("models", "list", "--json").stdout)
    assert [(m["name"], m["status"]) for m in listed] == [("gone", "testing"), ("medium", "available")]
    table = run("models", "list").stdout
    assert "openai/sim-medium-fast" in table and "1 / 4" in table
    assert json.loads(run("models", "list", "--status", "available", "--json").stdout)[0]["name"] == "medium"

    ok = run("models", "health", "medium", "--json")
    assert ok.exit_code == 0 and json.loads(ok.stdout)[0]["success"] is True
    both = run("models", "health")
    line = error_of(both)
    assert "1 of 2 models failed their health check (gone)" in line
    assert "medium" in both.stdout and "gone" in both.stdout

    assert run("models", "approve", "gone", "--reason", "looked fine").exit_code == 0
    r = run("models", "deprecate", "gone")
    assert r.exit_code == 0 and "gone: available -> deprecated" in r.stdout
    line = error_of(run("models", "approve", "gone"))
    assert line == "error: Cannot approve a model that is deprecated; from deprecated the allowed actions are: retest."
    assert ModelRegistry(cli_store).get("gone").status.value == "deprecated"
    assert "Cannot deprecate a model that is deprecated" in error_of(run("models", "deprecate", "gone"))

    sched = run("models", "health", "--every", "300")
    assert sched.exit_code == 0 and "scheduled models.health" in sched.stdout
    assert json.loads(run("jobs", "schedules", "--json").stdout)[0]["every_s"] == 300


def test_bad_model_input_is_one_sentence_and_writes_nothing(run: Run, error_of: ErrorOf, cli_store: Store, tmp_path) -> None:
    cases = [
        (["models", "register", "m", "--provider", "acme", "--model-name", "x"], "Unknown provider 'acme'"),
        (["models", "register", "m", "--provider", "openai", "--model-name", "x", "--config", "{nope"], "--config is not JSON"),
        (["models", "register", "m", "--provider", "openai", "--model-name", "x", "--secret-ref", "sk-proj-8f3kd93kfk39fk39dkf93kd"], "secret"),
        (["models", "health", "ghost"], "ghost"),
        (["models", "approve", "ghost"], "ghost"),
        (["models", "list", "--status", "bogus"], "Unknown status 'bogus'"),
    ]
    bad_file = tmp_path / "cfg.yaml"
    bad_file.write_text("timeout_s: [1, 2\n")
    cases.append((["models", "register", "m", "--provider", "openai", "--model-name", "x", "--config-file", str(bad_file), "--no-health-check"], "not valid YAML"))
    for args, want in cases:
        line = error_of(run(*args))
        assert want in line, (args, line)
    assert "sk-proj" not in run("models", "list").output
    assert ModelRegistry(cli_store).models() == []
    r = run("models", "register", "m", "--provider", "openai", "--model-name", "x", "--no-health-check")
    assert r.exit_code == 0
    assert "already registered" in error_of(run("models", "register", "m", "--provider", "openai", "--model-name", "y", "--no-health-check"))
    assert [m.model_name for m in ModelRegistry(cli_store).models()] == ["x"]


def test_programs_list_versions_and_aliases(run: Run, error_of: ErrorOf, cli_store: Store) -> None:
    programs = Programs(cli_store)
    programs.save_version("qa", {"predict": {"demos": []}}, score=0.61, created_by="job:abc", tags=["baseline"])
    programs.save_version("qa", {"predict": {"demos": [{"q": 1}]}}, score=0.74)
    programs.save_version("summ", {"p": {}})
    r = run("programs", "alias", "qa", "champion", "1", "--reason", "first")
    assert r.exit_code == 0 and "qa champion: unset -> v1" in r.stdout
    r = run("programs", "alias", "qa", "champion", "2", "--json")
    assert json.loads(r.stdout)["from_version"] == 1 and json.loads(r.stdout)["to_version"] == 2
    assert run("programs", "alias", "qa", "canary", "latest").exit_code == 0
    listed = json.loads(run("programs", "list", "--json").stdout)
    qa = next(p for p in listed if p["name"] == "qa")
    assert (qa["versions"], qa["latest"], qa["best_version"], qa["aliases"]) == (2, 2, 2, {"champion": 2, "canary": 2})
    assert "champion=v2" in run("programs", "list").stdout
    versions = json.loads(run("programs", "versions", "qa", "--json").stdout)
    assert [(v["version"], v["aliases"], v["tags"]) for v in versions] == [(1, [], ["baseline"]), (2, ["canary", "champion"], [])]
    table = run("programs", "versions", "qa").stdout
    assert "job:abc" in table and "0.610" in table
    assert run("programs", "alias", "qa", "canary", "--remove").exit_code == 0

    assert "no version 9" in error_of(run("programs", "alias", "qa", "champion", "9"))
    assert "has no alias 'canary'" in error_of(run("programs", "alias", "qa", "canary", "--remove"))
    assert "VERSION" in error_of(run("programs", "alias", "qa", "champion"))
    assert "No program named 'ghost'" in error_of(run("programs", "versions", "ghost"))
    assert "'latest' is reserved" in error_of(run("programs", "alias", "qa", "latest", "1"))
    assert Programs(cli_store).aliases("qa") == {"champion": 2}
    assert [e.alias for e in Programs(cli_store).alias_history("qa")] == ["champion", "champion", "canary", "canary"]
