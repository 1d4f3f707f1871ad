"""``dspex models``: the model registry (register, list, health-check, approve, deprecate)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dspex.cluster.cli._common import console, err_console, fail, guarded, print_json, print_table
from dspex.cluster.cli._helpers import ago, read_json_or_yaml, store
from dspex.errors import ValidationError

app = typer.Typer(help="The model registry: register models, check their health, approve or deprecate them.", no_args_is_help=True)


def _registry() -> Any:
    from dspex.registry import ModelRegistry

    return ModelRegistry(store())


def _row(m: Any, now: float) -> dict[str, Any]:
    return {
        "name": m.name,
        "provider": m.provider,
        "model_name": m.model_name,
        "status": m.status.value,
        "status_reason": m.status_reason,
        "health": m.health_status(now).value,
        "success_rate": m.success_rate,
        "average_latency_ms": m.average_latency_ms,
        "input_price_per_1m_usd": m.input_price_per_1m_usd,
        "output_price_per_1m_usd": m.output_price_per_1m_usd,
        "base_url": m.base_url,
        "secret_ref": m.secret_ref,  # the variable's name, never its value
        "context_window": m.context_window,
        "max_tokens": m.max_tokens,
        "last_health_check_s": m.last_health_check_s,
    }


@app.command()
@guarded
def register(
    name: str = typer.Argument(..., help="The model's name in the registry."),
    provider: str = typer.Option(..., help="openai, anthropic, cohere, local, ollama, vllm, llamacpp, huggingface or openai_compatible."),
    model_name: str = typer.Option(..., "--model-name", help="The provider's model name (e.g. gpt-4o-mini, sim-small)."),
    base_url: str | None = typer.Option(None, help="The API's base URL (needed for local and OpenAI-compatible servers)."),
    secret_ref: str | None = typer.Option(None, help="The NAME of the environment variable holding the API key (never the key)."),
    input_price: float = typer.Option(0.0, "--input-price", help="USD per 1M input tokens."),
    output_price: float = typer.Option(0.0, "--output-price", help="USD per 1M output tokens."),
    max_tokens: int | None = typer.Option(None, help="Reply length limit."),
    context_window: int | None = typer.Option(None, help="Context window in tokens."),
    config: str | None = typer.Option(None, help="Other LM settings as a JSON object (timeout_s, rpm, temperature, ...)."),
    config_file: Path | None = typer.Option(None, help="The same settings in a JSON or YAML file."),
    health_check: bool = typer.Option(True, "--health-check/--no-health-check", help="Probe the model once it is registered."),
    approve: bool = typer.Option(False, "--approve", help="Approve it (testing -> available) when its health check passes."),
    as_json: bool = typer.Option(False, "--json", help="Print the model as JSON."),
) -> None:
    """Register a model (status: testing); probe it and optionally approve it."""
    if config is not None and config_file is not None:
        raise ValidationError("Give --config or --config-file, not both.", field="config")
    settings: Any = None
    if config is not None:
        try:
            settings = json.loads(config)
        except json.JSONDecodeError as exc:
            raise ValidationError(f"--config is not JSON ({exc.msg}); pass an object like '{{\"timeout_s\": 30}}'.", field="config") from exc
    elif config_file is not None:
        settings = read_json_or_yaml(config_file)
    if settings is not None and not isinstance(settings, dict):
        raise ValidationError("The model config must be a JSON object.", field="config")
    reg = _registry()
    model = reg.register(
        name,
        provider,
        model_name,
        base_url=base_url,
        secret_ref=secret_ref,
        config=settings,
        input_price_per_1m_usd=input_price,
        output_price_per_1m_usd=output_price,
        max_tokens=max_tokens,
        context_window=context_window,
    )
    check = reg.health_check(name) if health_check else None
    if approve and check is not None and check.success:
        model = reg.approve(name, reason="health check passed at registration")
    if as_json:
        print_json({**_row(model, time.time()), "health_check": None if check is None else _check_row(check)})
        return
    line = f"registered model {name} ({model.status.value})"
    if check is not None:
        line += f"; health check {'passed' if check.success else 'FAILED'} in {check.latency_ms:.0f} ms"
        if not check.success:
            line += f": {check.error}"
    console.print(line, highlight=False)
    if approve and check is not None and not check.success:
        fail(f"model {name} was registered but not approved: its health check failed; fix it and run `dspex models approve {name}`.")


@app.command("list")
@guarded
def list_models(
    status: str | None = typer.Option(None, help="Only models in this status (testing, available, deprecated, error)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """List registered models with their status, health and prices."""
    from dspex.registry import ModelStatus

    if status is not None and status not in {s.value for s in ModelStatus}:
        raise ValidationError(f"Unknown status {status!r}; use one of {[s.value for s in ModelStatus]}.", field="status")
    now = time.time()
    models = [_row(m, now) for m in _registry().models(status)]
    if as_json:
        print_json(models)
        return
    rows = [
        (
            m["name"],
            f"{m['provider']}/{m['model_name']}",
            m["status"],
            m["health"],
            "—" if m["success_rate"] is None else f"{m['success_rate']:.0%}",
            "—" if m["average_latency_ms"] is None else f"{m['average_latency_ms']:.0f}",
            f"{m['input_price_per_1m_usd']:g} / {m['output_price_per_1m_usd']:g}",
            ago(m["last_health_check_s"], now),
        )
        for m in models
    ]
    print_table("models", ["name", "model", "status", "health", "success", "latency ms", "$ / 1M in / out", "checked"], rows)


def _check_row(r: Any) -> dict[str, Any]:
    return {"model": r.model, "success": r.success, "latency_ms": round(r.latency_ms, 1), "health": r.health.value, "error": r.error}


@app.command()
@guarded
def health(
    names: list[str] | None = typer.Argument(None, help="Models to probe (default: every model in testing or available)."),
    timeout_s: float = typer.Option(10.0, help="Seconds to wait for each probe."),
    every: float | None = typer.Option(None, "--every", help="Instead of probing now, schedule a periodic health-check job every this many seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Probe models now (exit 1 when any probe fails), or schedule periodic checks (--every)."""
    from dspex.registry import ModelStatus

    reg = _registry()
    if every is not None:
        from dspex.pipelines.jobs import JobEngine

        if names and len(names) > 1:
            raise ValidationError("--every schedules one model or all of them; name at most one.", field="names")
        name = f"models.health.{names[0]}" if names else "models.health"
        sch = JobEngine(store()).schedule(name, "health_check", every_s=every, args={"model": names[0]} if names else {"timeout_s": timeout_s})
        if as_json:
            print_json(sch.to_dict())
        else:
            console.print(f"scheduled {name}: a health_check job every {every:g} s (a job engine runs it: `dspex jobs work`).")
        return
    targets = [reg.get(n).name for n in names] if names else [
        m.name for m in reg.models() if m.status in (ModelStatus.TESTING, ModelStatus.AVAILABLE)
    ]
    results = []
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                  console=err_console, transient=True, disable=as_json) as progress:
        task = progress.add_task("health checks", total=len(targets))
        for name in targets:
            progress.update(task, description=f"probing {name}")
            results.append(reg.health_check(name, timeout_s=timeout_s))
            progress.advance(task)
    rows = [_check_row(r) for r in results]
    if as_json:
        print_json(rows)
    else:
        print_table("health checks", ["model", "ok", "latency ms", "health", "error"],
                    [(r["model"], "yes" if r["success"] else "NO", f"{r['latency_ms']:.0f}", r["health"], r["error"] or "") for r in rows])
    failed = [r["model"] for r in rows if not r["success"]]
    if failed:
        fail(f"{len(failed)} of {len(rows)} models failed their health check ({', '.join(failed)}); see the errors above.")


def _transition(action: str, name: str, reason: str | None, as_json: bool) -> None:
    reg = _registry()
    before = reg.get(name).status.value
    model = getattr(reg, action)(name, reason=reason)
    if as_json:
        print_json(_row(model, time.time()))
    else:
        console.print(f"model {name}: {before} -> {model.status.value}", highlight=False)


@app.command()
@guarded
def approve(
    name: str = typer.Argument(..., help="The model to approve (testing -> available)."),
    reason: str | None = typer.Option(None, help="Why (kept with the status)."),
    as_json: bool = typer.Option(False, "--json", help="Print the model as JSON."),
) -> None:
    """Approve a model in testing: it becomes available to route to."""
    _transition("approve", name, reason, as_json)


@app.command()
@guarded
def deprecate(
    name: str = typer.Argument(..., help="The model to deprecate."),
    reason: str | None = typer.Option(None, help="Why (kept with the status)."),
    as_json: bool = typer.Option(False, "--json", help="Print the model as JSON."),
) -> None:
    """Deprecate a model: the router stops choosing it."""
    _transition("deprecate", name, reason, as_json)
