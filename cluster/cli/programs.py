"""``dspex programs``: stored programs, their immutable versions, and aliases."""

from __future__ import annotations

from typing import Any

import typer

from dspex.cluster.cli._common import console, guarded, print_json, print_table
from dspex.cluster.cli._helpers import store, when

app = typer.Typer(help="Stored programs: list them, their versions, and move aliases (champion, canary).", no_args_is_help=True)


def _programs() -> Any:
    from dspex.store import Programs

    return Programs(store())


@app.command("list")
@guarded
def list_programs(as_json: bool = typer.Option(False, "--json", help="Print JSON.")) -> None:
    """List programs with their newest version, best score and aliases."""
    programs = _programs()
    out = []
    for info in programs.all():
        versions = programs.versions(info.name)
        scored = [v for v in versions if v.score is not None]
        best = max(scored, key=lambda v: v.score) if scored else None
        out.append(
            {
                "name": info.name,
                "description": info.description,
                "versions": len(versions),
                "latest": versions[-1].version if versions else None,
                "best_version": None if best is None else best.version,
                "best_score": None if best is None else best.score,
                "aliases": programs.aliases(info.name),
                "created_at": info.created_at.isoformat(),
            }
        )
    if as_json:
        print_json(out)
        return
    rows = [
        (
            p["name"],
            p["versions"],
            p["latest"] or "—",
            "—" if p["best_score"] is None else f"{p['best_score']:.3f} (v{p['best_version']})",
            ", ".join(f"{a}=v{v}" for a, v in sorted(p["aliases"].items())) or "—",
        )
        for p in out
    ]
    print_table("programs", ["name", "versions", "latest", "best score", "aliases"], rows)


@app.command()
@guarded
def versions(
    name: str = typer.Argument(..., help="The program's name."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON (learned state included)."),
) -> None:
    """List a program's versions: score, who made them, tags and the aliases on them."""
    programs = _programs()
    items = programs.versions(name)
    by_version: dict[int, list[str]] = {}
    for alias, v in programs.aliases(name).items():
        by_version.setdefault(v, []).append(alias)
    if as_json:
        print_json(
            [
                {
                    "version": v.version,
                    "score": v.score,
                    "created_by": v.created_by,
                    "created_at": v.created_at.isoformat(),
                    "tags": list(v.tags),
                    "aliases": sorted(by_version.get(v.version, [])),
                    "trainset_hash": v.trainset_hash,
                    "notes": v.notes,
                    "state": v.state,
                }
                for v in items
            ]
        )
        return
    rows = [
        (
            v.version,
            "—" if v.score is None else f"{v.score:.3f}",
            v.created_by or "—",
            when(v.created_at),
            ", ".join(v.tags) or "—",
            ", ".join(sorted(by_version.get(v.version, []))) or "—",
        )
        for v in items
    ]
    print_table(f"versions of {name}", ["version", "score", "created by", "created", "tags", "aliases"], rows)


@app.command()
@guarded
def alias(
    name: str = typer.Argument(..., help="The program's name."),
    alias_name: str = typer.Argument(..., metavar="ALIAS", help="The alias (champion, challenger, canary, ...)."),
    version: str | None = typer.Argument(None, help="The version number (or another alias) to point it at."),
    remove: bool = typer.Option(False, "--remove", help="Remove the alias instead."),
    reason: str | None = typer.Option(None, help="Why (kept in the audit trail)."),
    actor: str = typer.Option("cli", help="Who (kept in the audit trail)."),
    as_json: bool = typer.Option(False, "--json", help="Print the audit event as JSON."),
) -> None:
    """Point an alias at a version (or --remove it); every move is kept in the audit trail."""
    from dspex.errors import ValidationError

    programs = _programs()
    if remove == (version is not None):
        raise ValidationError("Give the VERSION to point the alias at, or --remove (not both).", field="version")
    if remove:
        ev = programs.remove_alias(name, alias_name, actor=actor, reason=reason)
    else:
        assert version is not None
        ev = programs.set_alias(name, alias_name, int(version) if version.isdigit() else version, actor=actor, reason=reason)
    if as_json:
        print_json({"program": ev.program, "alias": ev.alias, "from_version": ev.from_version, "to_version": ev.to_version,
                    "actor": ev.actor, "reason": ev.reason, "at": ev.at.isoformat()})
        return
    before = "unset" if ev.from_version is None else f"v{ev.from_version}"
    after = "removed" if ev.to_version is None else f"v{ev.to_version}"
    console.print(f"{name} {alias_name}: {before} -> {after}", highlight=False)
