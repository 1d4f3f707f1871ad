"""``dspex experiments``: run an offline experiment from a spec file, and report finished ones
from the store (Markdown, JSON, PNG plots)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import typer

from dspex.cluster.cli._common import console, guarded, print_json, print_table
from dspex.cluster.cli._helpers import finish, read_json_or_yaml, run_here, store, submit, when

app = typer.Typer(help="Offline experiments: run one from a spec file, report finished ones.", no_args_is_help=True)

_ID = re.compile(r"^[0-9a-f]{32}$")


def _archive() -> Any:
    from dspex.pipelines.experiments.store_archive import StoreArchive

    return StoreArchive(store())


@app.command()
@guarded
def run(
    spec_file: Path = typer.Argument(..., help="The experiment spec (JSON or YAML): name, dataset, lm, baseline, variants, ..."),
    backend: str = typer.Option("auto", help="auto (Ray when connected), local or ray."),
    report: Path | None = typer.Option(None, "--report", help="Write the report (Markdown, JSON, PNG plots) into this folder."),
    do_submit: bool = typer.Option(False, "--submit", help="Run it as a Ray job on a cluster instead of here."),
    address: str | None = typer.Option(None, help="The Ray dashboard address for --submit."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="With --submit: tail the job's logs until it ends."),
    job_id: str | None = typer.Option(None, help="The job's id (submitting an id twice runs it once)."),
    max_attempts: int = typer.Option(1, help="Attempts before the job is discarded."),
    as_json: bool = typer.Option(False, "--json", help="Print the job record as JSON."),
) -> None:
    """Run the experiment SPEC_FILE describes; its record is kept in the store."""
    from dspex.errors import ExperimentError
    from dspex.pipelines.experiments import ExperimentSpec

    data = read_json_or_yaml(spec_file)
    if not isinstance(data, dict):
        raise ExperimentError(f"{spec_file} must hold one experiment spec (a mapping), not a {type(data).__name__}.")
    if backend not in ("auto", "local", "ray"):
        raise ExperimentError(f"--backend must be auto, local or ray, got {backend!r}.")
    ExperimentSpec(**data)  # a bad spec fails here, before anything is written
    args: dict[str, Any] = {"spec": data, "backend": backend}
    if report is not None:
        args["report_dir"] = str(report.resolve())
    if do_submit:
        submit("experiment", args, address=address, follow=follow, job_id=job_id, max_attempts=max_attempts, as_json=as_json)
        return
    finish(run_here("experiment", args, max_attempts=max_attempts, job_id=job_id), as_json)


@app.command("report")
@guarded
def report_cmd(
    experiment: str | None = typer.Argument(None, help="The experiment's id, or its name (the newest run of that name)."),
    list_all: bool = typer.Option(False, "--list", help="List stored experiments instead."),
    out: Path | None = typer.Option(None, "--out", help="Write the report (Markdown, JSON, PNG plots) into this folder."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show a finished experiment's report (Markdown), or write it with its plots (--out)."""
    from dspex.errors import ExperimentError
    from dspex.pipelines.experiments import Report

    archive = _archive()
    if list_all or experiment is None:
        records = archive.list()
        if as_json:
            print_json([{k: v for k, v in r.to_dict().items() if k not in ("arms", "result", "spec")} | {
                "winner": (r.result or {}).get("winner")} for r in records])
            return
        print_table("experiments", ["id", "name", "status", "created", "duration s", "winner"], [
            (r.id, r.name, r.status, when(r.created_s), "—" if r.duration_s is None else f"{r.duration_s:.1f}",
             (r.result or {}).get("winner") or "—") for r in records
        ])
        return
    record = archive.load(experiment) if _ID.match(experiment) else archive.latest(experiment)
    rendered = Report.from_record(record)
    if out is not None:
        paths = rendered.write(out)
        if as_json:
            print_json({"experiment_id": record.id, "paths": {p.name: str(p) for p in paths.all()}})
        else:
            print_table(f"report of {record.name} ({record.id})", ["file", "path"], [(p.name, str(p)) for p in paths.all()])
        return
    if as_json:
        print_json(rendered.to_dict())
        return
    if record.status != "completed":
        raise ExperimentError(f"Experiment {record.id} is {record.status}.")
    console.print(rendered.to_markdown(), markup=False, highlight=False)
