"""``dspex serve``: build a Serve config for ``serve deploy``."""

from __future__ import annotations

from pathlib import Path

import typer

from dspex.cluster.cli._common import console, guarded, print_json

app = typer.Typer(help="Serve dspex programs on Ray Serve.", no_args_is_help=True)


@app.command()
@guarded
def build(
    programs: Path = typer.Argument(..., exists=True, dir_okay=False, help="YAML/JSON file listing the programs to serve."),
    output: Path = typer.Option(Path("serve.yaml"), "--output", "-o", help="Where to write the Serve config."),
    wheel_dir: Path | None = typer.Option(None, help="Where to put the dspex wheel (default: beside the config)."),
    wheel_base_url: str | None = typer.Option(None, help="URL the wheel will be uploaded under (multi-node clusters)."),
    no_build: bool = typer.Option(False, "--no-build", help="Do not build the wheel (the nodes have dspex installed)."),
    http_port: int = typer.Option(8000, help="Port of Serve's HTTP proxy."),
    as_json: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Write a Serve config YAML (import path, args, runtime_env with the dspex wheel) for
    ``serve deploy``."""
    from dspex.cluster.serve.build import load_programs, write_serve_config

    listed = load_programs(programs)
    path = write_serve_config(
        listed, output, wheel_dir=wheel_dir, wheel_base_url=wheel_base_url, build=not no_build, http_port=http_port
    )
    if as_json:
        print_json({"config": str(path), "programs": [p.get("name") for p in listed]})
    else:
        console.print(f"wrote {path} for {len(listed)} program(s); deploy it with: serve deploy {path}")
