"""``dspex deploy`` and ``dspex rollout ...`` against a real SQLite store (no Ray needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from dspex.cluster.cli import rollout
from dspex.pipelines.rollouts.registry import ProgramRegistry


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    from dspex.store import open_store

    url = f"sqlite:///{tmp_path / 'cli.db'}"
    registry = ProgramRegistry(open_store(url))
    for _ in range(3):
        registry.register("qa", {}, scores={"score": 0.7})
    registry.deploy("qa", 1)
    root = typer.Typer()
    rollout.register(root)
    runner = CliRunner()

    def run(*args: str) -> Any:
        return runner.invoke(root, [*args, "--database", url])

    run.url = url  # type: ignore[attr-defined]
    return run


def test_deploy_then_steer_the_rollout(cli: Any) -> None:
    out = cli(
        "deploy", "qa", "--version", "2", "--interval", "10", "--gate", "error_rate<=0.05", "--json"
    )
    assert out.exit_code == 0, out.output
    status = json.loads(out.output)
    assert (status["canary"], status["champion"], status["phase"]) == (2, 1, "initializing")
    assert (
        status["deployment"]["status"] == "validating"
        and status["deployment"]["trigger_reason"] == "manual (cli)"
    )
    from dspex.pipelines.jobs import JobEngine
    from dspex.store import open_store

    schedules = {s.name: s for s in JobEngine(open_store(cli.url)).jobs.schedules()}
    assert (
        schedules["rollout:qa"].args == {"program": "qa"} and schedules["rollout:qa"].every_s == 2.0
    )

    refused = cli("rollout", "promote", "qa")
    assert refused.exit_code == 1
    assert "Cannot promote a rollout that is initializing" in refused.output
    assert "Traceback" not in refused.output

    aborted = json.loads(cli("rollout", "abort", "qa", "--reason", "wrong build", "--json").output)
    assert (
        aborted["phase"] == "aborted"
        and aborted["message"] == "wrong build"
        and aborted["allowed"] == ["retry"]
    )
    retried = json.loads(cli("rollout", "retry", "qa", "--json").output)
    assert retried["phase"] == "initializing" and retried["attempts"] == 2
    assert cli("rollout", "skip-analysis", "qa").exit_code == 0
    table = cli("rollout", "status", "qa")
    assert (
        table.exit_code == 0
        and "initializing" in table.output
        and "analysis skipped by operator" in table.output
    )
    listed = json.loads(cli("rollout", "list", "--json").output)
    assert [r["canary"] for r in listed] == [2]
    # a newer version submitted mid-rollout replaces it, from step 0
    replaced = json.loads(
        cli("deploy", "qa", "--version", "3", "--interval", "10", "--json").output
    )
    assert replaced["canary"] == 3 and replaced["restarts"] == 1
    assert json.loads(cli("rollout", "undo", "qa", "--json").output)["phase"] == "aborted"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("deploy", "qa", "--version", "9"), "has no version 9"),
        (("deploy", "qa", "--version", "2", "--gate", "error rate < 5%"), "Cannot read the gate"),
        (("deploy", "qa", "--version", "2", "--interval", "1"), "interval_s must be at least 10"),
        (("deploy", "qa", "--version", "2", "--strategy", "yolo"), "unknown strategy 'yolo'"),
        (("deploy", "qa", "--version", "1"), "already the champion"),
        (("rollout", "status", "nope"), "has no rollout yet"),
        (("rollout", "pause", "qa"), "has no rollout to pause"),
        (("rollout", "undo", "qa"), "no earlier champion"),
    ],
)
def test_errors_are_one_sentence_and_exit_1(cli: Any, args: tuple[str, ...], message: str) -> None:
    out = cli(*args)
    assert out.exit_code == 1, out.output
    assert message in out.output and "Traceback" not in out.output
