"""The CLI under test: the command groups mounted as ``dspex`` mounts them, a fresh SQLite store
per test (``DSPEX_DATABASE_URL``), and ``run(*args)`` returning click's ``Result``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import typer
from click.testing import Result
from jobs.jobs_support import register_test_kinds
from typer.testing import CliRunner

from dspex.cluster.cli import evaluate, experiments, jobs, models, optimize, programs
from dspex.store import Store, open_store

# the lines dspex.cluster.cli's app adds (the lead's wiring)
app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(models.app, name="models")
app.add_typer(programs.app, name="programs")
app.add_typer(optimize.app, name="optimize")
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(experiments.app, name="experiments")
app.add_typer(jobs.app, name="jobs")


def pytest_configure(config: pytest.Config) -> None:
    for plugin in ("fixtures.sim", "fixtures.ray_session"):
        if not config.pluginmanager.has_plugin(plugin):
            config.pluginmanager.import_plugin(plugin)


@pytest.fixture
def cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("DSPEX_DATABASE_URL", url)
    register_test_kinds()
    s = open_store(url)
    yield s
    s.close()


@pytest.fixture
def run(cli_store: Store) -> Callable[..., Result]:
    runner = CliRunner(env={"COLUMNS": "250", "NO_COLOR": "1"})

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args), catch_exceptions=False)

    return invoke


def _one_sentence_error(result: Result) -> str:
    """The error output: exactly one line starting with ``error:``, ending the output; exit 1."""
    assert result.exit_code == 1, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: "), result.stderr
    errors = [ln for ln in lines if ln.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    return errors[0]


@pytest.fixture
def error_of() -> Callable[[Result], str]:
    return _one_sentence_error
