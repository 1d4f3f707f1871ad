"""The ``dspex`` command: one surface over the simulator, registry, optimizers, rollouts,
experiments, jobs and Serve. Every read command takes ``--json``; errors are one sentence and a
non-zero exit code (see ``_common``)."""

from __future__ import annotations

import os

import typer

from dspex.cluster.cli import evaluate, experiments, jobs, models, optimize, programs, rollout, sim, serve

__all__ = ["app", "main"]

app = typer.Typer(
    name="dspex",
    help="DSPy's programming model on Ray, with a model registry, rollouts and experiments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(sim.app, name="sim")
app.add_typer(models.app, name="models")
app.add_typer(programs.app, name="programs")
app.add_typer(optimize.app, name="optimize")
app.add_typer(evaluate.app, name="evaluate")
app.add_typer(experiments.app, name="experiments")
app.add_typer(jobs.app, name="jobs")
app.add_typer(serve.app, name="serve")
rollout.register(app)  # `dspex deploy` and the `dspex rollout` group


@app.command()
def version() -> None:
    """Print dspex's version."""
    from dspex import __version__

    typer.echo(__version__)


@app.command()
def demo(fast: bool = typer.Option(False, help="A smaller run (for CI smoke tests).")) -> None:
    """The whole story end to end on the embedded defaults: local Ray, SQLite, the simulated LM."""
    from dspex.cluster.demo import run_demo

    raise typer.Exit(run_demo(fast=fast))


def main() -> None:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    app()
