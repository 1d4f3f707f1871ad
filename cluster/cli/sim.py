"""``dspex sim``: the simulated LM server (a synthetic benchmark, not a real LM)."""

from __future__ import annotations

from pathlib import Path

import typer

from dspex.cluster.cli._common import guarded

app = typer.Typer(help="Run the simulated LM server that dspex's demo, tests and benchmarks use offline.", no_args_is_help=True)


def _run(argv: list[str]) -> int:
    from dspex.sim.__main__ import main as sim_main

    return int(sim_main(argv) or 0)


@app.command()
@guarded
def serve(
    port: int = typer.Option(8765, help="Port to listen on (0 picks a free one)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    config: Path | None = typer.Option(None, exists=True, dir_okay=False, help="Model and fault config (YAML or JSON)."),
) -> None:
    """Serve OpenAI- and Anthropic-compatible endpoints until interrupted."""
    argv = ["serve", "--port", str(port), "--host", host]
    if config is not None:
        argv += ["--config", str(config)]
    raise typer.Exit(_run(argv))


@app.command()
@guarded
def tasks(show: int = typer.Option(2, help="Examples to show per task.")) -> None:
    """List the synthetic tasks and a few of their examples."""
    raise typer.Exit(_run(["tasks", "--show", str(show)]))


@app.command()
@guarded
def config() -> None:
    """Print the built-in model config as YAML (a starting point to edit)."""
    raise typer.Exit(_run(["config"]))
