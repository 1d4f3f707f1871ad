"""The lead's CLI commands: version, sim, serve build — through typer's runner, bad input included."""

from pathlib import Path

import yaml
from typer.testing import CliRunner

from dspex.cluster.cli import app

runner = CliRunner()


def test_version():
    from dspex import __version__

    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0 and result.stdout.strip() == __version__


def test_sim_tasks_lists_every_task():
    result = runner.invoke(app, ["sim", "tasks", "--show", "1"])
    assert result.exit_code == 0
    for task in ("arithmetic", "classification", "multihop"):
        assert task in result.stdout


def test_sim_serve_with_a_missing_config_is_refused():
    result = runner.invoke(app, ["sim", "serve", "--config", "/nonexistent/sim.yaml"])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_serve_build_writes_a_config(tmp_path: Path):
    programs = tmp_path / "programs.yaml"
    programs.write_text(
        yaml.safe_dump(
            {"programs": [{"program": "qa", "versions": [{"version": 1, "factory": "my_pkg.programs:qa"}]}]}
        )
    )
    out = tmp_path / "serve.yaml"
    result = runner.invoke(app, ["serve", "build", str(programs), "-o", str(out), "--no-build", "--json"])
    assert result.exit_code == 0, result.output
    config = yaml.safe_load(out.read_text())
    assert [a["name"] for a in config["applications"]] == ["qa"]


def test_serve_build_with_a_malformed_file_fails_in_one_sentence_and_writes_nothing(tmp_path: Path):
    programs = tmp_path / "programs.yaml"
    programs.write_text(yaml.safe_dump({"programs": [{"versions": []}]}))
    out = tmp_path / "serve.yaml"
    result = runner.invoke(app, ["serve", "build", str(programs), "-o", str(out), "--no-build"])
    assert result.exit_code == 1
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) <= 3
    assert not out.exists()
