"""``ModelRegistry``: models and program assignments, persisted in the store, served from memory.

Every action writes through to the store first, then updates the in-memory view the router
reads on each call (so routing never waits on the database). Metrics measured from real calls
(moving averages of latency and success) change in memory and reach the store in the
execution log's batches (``attach_log``), or on ``flush_metrics()``. Another process's changes
are picked up by ``refresh()`` (the health checker can call it periodically).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from dspex import telemetry
from dspex.errors import AlreadyExists, DSPexError, NotFound, ValidationError
from dspex.registry._convert import (
    check_name,
    check_positive,
    check_price,
    model_from_row,
    parse_strategy,
    utc_datetime,
)
from dspex.registry.assignment import ProgramModel, Strategy, check_conditions
from dspex.registry.model import (
    DEFAULT_STALE_AFTER_S,
    PROVIDERS,
    CostEstimate,
    HealthStatus,
    Model,
    ModelStatus,
    check_base_url,
    check_config,
    check_secret_ref,
    next_status,
)
from dspex.store import ExecutionLog, Store, open_store
from dspex.store.schema import ModelRow, ProgramModelRow, ProgramRow
from dspex.utils.asyncio_bridge import run_sync

if TYPE_CHECKING:
    from dspex.clients.base_lm import BaseLM

__all__ = ["HealthCheckResult", "LMFactory", "ModelRegistry"]

log = logging.getLogger("dspex.registry")

LMFactory = Callable[[Model], "BaseLM"]

_TRANSITION = ("dspex", "registry", "transition")
_HEALTH = ("dspex", "registry", "health_check")

#: fields of a model that ``update`` may change (status moves only through its actions)
_UPDATABLE = frozenset(
    {"provider", "model_name", "base_url", "secret_ref", "config", "input_price_per_1m_usd",
     "output_price_per_1m_usd", "max_tokens", "context_window", "supports_functions", "supports_streaming"}
)
_PROBE_PROMPT = "Reply with the single word OK."


@dataclass(frozen=True, slots=True)
class HealthCheckResult:
    model: str
    success: bool
    latency_ms: float
    health: HealthStatus
    checked_at_s: float
    error: str | None = None  # the error's type and message (clients redact keys from it)


class _MetricsHook:
    """Writes the moving averages of changed models inside the execution log's flushes."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def dirty(self) -> bool:
        return bool(self.registry._dirty)

    def write(self, session: Session) -> None:
        self.registry._write_metrics(session, self.registry._take_dirty())


class ModelRegistry:
    """Models and assignments of one store. Thread-safe; share one per process."""

    def __init__(
        self,
        store: Store | None = None,
        *,
        clock: Callable[[], float] = time.time,
        lm_factory: LMFactory | None = None,
        stale_after_s: float = DEFAULT_STALE_AFTER_S,
    ) -> None:
        self.store = store if store is not None else open_store()
        self.clock = clock
        self.stale_after_s = float(stale_after_s)
        if lm_factory is None:
            from dspex.registry.lm_factory import lm_for

            lm_factory = lm_for
        self.lm_factory: LMFactory = lm_factory
        self._lock = threading.RLock()
        self._models: dict[str, Model] = {}  # id -> model
        self._by_name: dict[str, Model] = {}
        self._programs: dict[str, str] = {}  # name -> id
        # program -> assignments by priority (highest first); replaced whole, read without a lock
        self._assignments: dict[str, tuple[ProgramModel, ...]] = {}
        self._dirty: set[str] = set()
        self._dirty_lock = threading.Lock()
        self._hook = _MetricsHook(self)
        #: bumped on every change of models or assignments (the router keys caches by it)
        self.generation = 0
        self.refresh()

    # -- reading ----------------------------------------------------------------------------
    def get(self, name: str) -> Model:
        """The model named ``name`` (or with that id)."""
        m = self._by_name.get(name) or self._models.get(name)
        if m is None:
            known = ", ".join(sorted(self._by_name)) or "none"
            raise NotFound(f"No model named {name!r} is registered (registered: {known}).")
        return m

    def models(self, status: ModelStatus | str | None = None) -> list[Model]:
        ms = sorted(self._by_name.values(), key=lambda m: m.name)
        return ms if status is None else [m for m in ms if m.status == ModelStatus(status)]

    def assignments(self, program: str) -> tuple[ProgramModel, ...]:
        """The program's assignments, highest priority first (empty when it has none)."""
        return self._assignments.get(program, ())

    def programs(self) -> list[str]:
        return sorted(self._programs)

    def health(self, name: str) -> HealthStatus:
        return self.get(name).health_status(self.clock(), self.stale_after_s)

    def estimate_cost(self, name: str, text: str, output_tokens: int | None = None) -> CostEstimate:
        return self.get(name).estimate_cost(text, output_tokens)

    # -- registering and changing models ----------------------------------------------------
    def register(
        self,
        name: str,
        provider: str,
        model_name: str,
        *,
        base_url: str | None = None,
        secret_ref: str | None = None,
        config: Mapping[str, Any] | None = None,
        input_price_per_1m_usd: float = 0.0,
        output_price_per_1m_usd: float = 0.0,
        max_tokens: int | None = None,
        context_window: int | None = None,
        supports_functions: bool = False,
        supports_streaming: bool = False,
        health_check: bool = False,
        health_check_timeout_s: float = 10.0,
    ) -> Model:
        """Register a model in ``testing``; ``health_check=True`` probes it at once."""
        check_name("model", name)
        if provider not in PROVIDERS:
            raise ValidationError(
                f"Unknown provider {provider!r}; use one of {sorted(PROVIDERS)}.", field="provider"
            )
        check_name("model_name", model_name)
        row = ModelRow(
            name=name,
            provider=provider,
            model_name=model_name,
            base_url=check_base_url(base_url),
            secret_ref=check_secret_ref(secret_ref),
            config=check_config(dict(config) if config is not None else None),
            status=ModelStatus.TESTING.value,
            input_price_per_1m_usd=check_price("input_price_per_1m_usd", input_price_per_1m_usd),
            output_price_per_1m_usd=check_price("output_price_per_1m_usd", output_price_per_1m_usd),
            max_tokens=check_positive("max_tokens", max_tokens),
            context_window=check_positive("context_window", context_window),
            supports_functions=bool(supports_functions),
            supports_streaming=bool(supports_streaming),
        )

        def fn(s: Session) -> Model:
            if s.scalar(select(ModelRow.id).where(ModelRow.name == name)) is not None:
                raise AlreadyExists(f"A model named {name!r} is already registered.", hint="Pick another name.")
            s.add(row)
            s.flush()
            return model_from_row(row)

        model = self.store.write(fn)
        with self._lock:
            self._models[model.id] = model
            self._by_name[model.name] = model
            self.generation += 1
        if health_check:
            self.health_check(name, timeout_s=health_check_timeout_s)
        return model

    def update(self, name: str, **changes: Any) -> Model:
        """Change a model's settings (prices, limits, URL, secret reference, config, ...)."""
        bad = sorted(set(changes) - _UPDATABLE)
        if bad:
            raise ValidationError(
                f"Cannot update {bad}; updatable fields are {sorted(_UPDATABLE)} (status moves through "
                "approve / deprecate / error / retest).",
                field=bad[0],
            )
        if "provider" in changes and changes["provider"] not in PROVIDERS:
            raise ValidationError(f"Unknown provider {changes['provider']!r}.", field="provider")
        if "base_url" in changes:
            check_base_url(changes["base_url"])
        if "secret_ref" in changes:
            check_secret_ref(changes["secret_ref"])
        if "config" in changes:
            changes["config"] = check_config(changes["config"])
        for key in ("max_tokens", "context_window"):
            if key in changes:
                check_positive(key, changes[key])
        for key in ("input_price_per_1m_usd", "output_price_per_1m_usd"):
            if key in changes:
                changes[key] = check_price(key, changes[key])
        model = self.get(name)

        def fn(s: Session) -> None:
            s.execute(update(ModelRow).where(ModelRow.id == model.id).values(**changes))

        self.store.write(fn)
        with self._lock:
            for key, value in changes.items():
                setattr(model, key, value)
            model.revision += 1
            self.generation += 1
        return model

    def remove(self, name: str) -> None:
        """Delete a model and its assignments (its execution log rows stay)."""
        model = self.get(name)
        self.store.write(lambda s: s.execute(delete(ModelRow).where(ModelRow.id == model.id)))
        with self._lock:
            self._models.pop(model.id, None)
            self._by_name.pop(model.name, None)
            for program, pms in list(self._assignments.items()):
                self._assignments[program] = tuple(pm for pm in pms if pm.model is not model)
            self.generation += 1

    # -- status actions (the seed's state machine) ------------------------------------------
    def approve(self, name: str, reason: str | None = None) -> Model:
        return self._transition(name, "approve", reason)

    def deprecate(self, name: str, reason: str | None = None) -> Model:
        return self._transition(name, "deprecate", reason)

    def error(self, name: str, reason: str | None = None) -> Model:
        return self._transition(name, "error", reason)

    def retest(self, name: str, reason: str | None = None) -> Model:
        return self._transition(name, "retest", reason)

    def _transition(self, name: str, event: str, reason: str | None, *, retry: bool = True) -> Model:
        model = self.get(name)
        with self._lock:
            before = model.status
            after = next_status(before, event)

            def fn(s: Session) -> None:
                # Compare-and-set: another process may have moved the status meanwhile.
                res = s.execute(
                    update(ModelRow)
                    .where(ModelRow.id == model.id, ModelRow.status == before.value)
                    .values(status=after.value, status_reason=reason)
                )
                if res.rowcount != 1:  # type: ignore[attr-defined]
                    raise _StaleStatus(f"Model {name!r} changed status in another process.")

            try:
                self.store.write(fn)
            except _StaleStatus:
                if not retry:
                    raise
                stale = True
            else:
                stale = False
                model.status = after
                model.status_reason = reason
                self.generation += 1
        if stale:
            # Our view was out of date: reload, then judge the event against the real status.
            self.refresh()
            return self._transition(name, event, reason, retry=False)
        telemetry.emit(_TRANSITION, {"count": 1}, {"model": name, "event": event, "from": before.value,
                                                    "to": after.value})
        return model

    # -- assignments ------------------------------------------------------------------------
    def assign(
        self,
        program: str,
        model: str,
        *,
        strategy: Strategy | str = Strategy.PRIMARY,
        priority: int = 0,
        weight: int = 100,
        conditions: Mapping[str, Any] | None = None,
    ) -> ProgramModel:
        """Assign ``model`` to ``program`` (created if missing) with a routing rule."""
        check_name("program", program)
        m = self.get(model)
        strat = parse_strategy(strategy)
        cond = check_conditions(conditions)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise ValidationError("priority is an integer (higher is preferred).", field="priority")
        if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
            raise ValidationError("weight is a non-negative integer.", field="weight")

        def fn(s: Session) -> tuple[str, str]:
            prog = s.scalar(select(ProgramRow).where(ProgramRow.name == program))
            if prog is None:
                prog = ProgramRow(name=program)
                s.add(prog)
                s.flush()
            exists = s.scalar(
                select(ProgramModelRow.id).where(
                    ProgramModelRow.program_id == prog.id, ProgramModelRow.model_id == m.id
                )
            )
            if exists is not None:
                raise AlreadyExists(
                    f"Model {model!r} is already assigned to program {program!r}.",
                    hint="Change it with update_assignment(), or unassign it first.",
                )
            row = ProgramModelRow(
                program_id=prog.id, model_id=m.id, routing_strategy=strat.value, priority=priority,
                weight=weight, conditions=cond,
            )
            s.add(row)
            s.flush()
            return prog.id, row.id

        program_id, pm_id = self.store.write(fn)
        pm = ProgramModel(pm_id, program, program_id, m, strat, priority, weight, cond)
        with self._lock:
            self._programs[program] = program_id
            self._set_assignments(program, (*self._assignments.get(program, ()), pm))
        return pm

    def update_assignment(
        self,
        program: str,
        model: str,
        *,
        strategy: Strategy | str | None = None,
        priority: int | None = None,
        weight: int | None = None,
        conditions: Mapping[str, Any] | None = None,
    ) -> ProgramModel:
        pm = self._assignment(program, model)
        values: dict[str, Any] = {}
        if strategy is not None:
            values["routing_strategy"] = parse_strategy(strategy).value
        if priority is not None:
            values["priority"] = int(priority)
        if weight is not None:
            if weight < 0:
                raise ValidationError("weight is a non-negative integer.", field="weight")
            values["weight"] = int(weight)
        if conditions is not None:
            values["conditions"] = check_conditions(conditions)
        if values:
            self.store.write(lambda s: s.execute(update(ProgramModelRow).where(ProgramModelRow.id == pm.id).values(**values)))
        with self._lock:
            if "routing_strategy" in values:
                pm.strategy = Strategy(values["routing_strategy"])
            pm.priority = values.get("priority", pm.priority)
            pm.weight = values.get("weight", pm.weight)
            pm.conditions = values.get("conditions", pm.conditions)
            self._set_assignments(program, self._assignments[program])
        return pm

    def unassign(self, program: str, model: str) -> None:
        pm = self._assignment(program, model)
        self.store.write(lambda s: s.execute(delete(ProgramModelRow).where(ProgramModelRow.id == pm.id)))
        with self._lock:
            self._set_assignments(program, tuple(p for p in self._assignments[program] if p is not pm))

    def _assignment(self, program: str, model: str) -> ProgramModel:
        for pm in self._assignments.get(program, ()):
            if pm.model.name == model:
                return pm
        raise NotFound(f"Model {model!r} is not assigned to program {program!r}.")

    def _set_assignments(self, program: str, pms: Iterable[ProgramModel]) -> None:
        # highest priority first; ties keep the order they were assigned in
        self._assignments[program] = tuple(sorted(pms, key=lambda p: -p.priority))
        self.generation += 1

    # -- measured metrics -------------------------------------------------------------------
    def observe(
        self,
        model: Model,
        *,
        success: bool,
        latency_ms: float | None,
        assignment: ProgramModel | None = None,
        cost_usd: float = 0.0,
        probe: bool = False,
    ) -> None:
        """Fold a real call's (or probe's) outcome into the model's and assignment's metrics."""
        model.observe(success=success, latency_ms=latency_ms, now_s=self.clock(), probe=probe)
        if assignment is not None:
            assignment.total_requests += 1
            assignment.successful_requests += success
            assignment.total_cost_usd += cost_usd
        self._dirty.add(model.id)

    def attach_log(self, execlog: ExecutionLog) -> None:
        """Write changed metrics inside ``execlog``'s batches from now on."""
        execlog.add_hook(self._hook)

    def flush_metrics(self) -> None:
        """Write changed metrics now (without an execution log)."""
        ids = self._take_dirty()
        if ids:
            self.store.write(lambda s: self._write_metrics(s, ids))

    def _take_dirty(self) -> list[str]:
        # Its own lock, never the registry's: the execution log calls this while it holds the
        # store's write lock, and an action holding the registry's lock may be waiting for that.
        with self._dirty_lock:
            ids = sorted(self._dirty)
            self._dirty.clear()
        return ids

    def _write_metrics(self, session: Session, ids: list[str]) -> None:
        for mid in ids:
            m = self._models.get(mid)
            if m is None:
                continue
            session.execute(
                update(ModelRow)
                .where(ModelRow.id == mid)
                .values(
                    average_latency_ms=m.average_latency_ms,
                    success_rate=m.success_rate,
                    last_health_check=utc_datetime(m.last_health_check_s),
                    last_call_at=utc_datetime(m.last_call_s),
                )
            )

    # -- health checks ----------------------------------------------------------------------
    async def ahealth_check(self, name: str, *, timeout_s: float = 10.0) -> HealthCheckResult:
        """Probe the model with one real call through its LM client; update its metrics."""
        model = self.get(name)
        t0 = time.perf_counter()
        error: str | None = None
        try:
            lm = self.lm_factory(model)
            await asyncio.wait_for(
                lm.aforward(messages=[{"role": "user", "content": _PROBE_PROMPT}], max_tokens=8, cache=False),
                timeout_s,
            )
        except TimeoutError:
            error = f"ProviderTimeout: no reply within {timeout_s:g} s"
        except Exception as exc:  # any failure of the probe is the finding, not a crash
            error = f"{type(exc).__name__}: {exc}"
        latency_ms = (time.perf_counter() - t0) * 1000.0
        ok = error is None
        self.observe(model, success=ok, latency_ms=latency_ms if ok else None, probe=True)
        ids = self._take_dirty()
        await asyncio.to_thread(self.store.write, lambda s: self._write_metrics(s, ids))
        now = self.clock()
        health = model.health_status(now, self.stale_after_s)
        telemetry.emit(
            _HEALTH,
            {"latency_ms": latency_ms, "success": int(ok), "success_rate": model.success_rate or 0.0},
            {"model": name, "health": health.value, "error_type": error.split(":")[0] if error else None},
        )
        if not ok:
            log.info("health check of model %r failed (%s)", name, error.split(":")[0] if error else "")
        return HealthCheckResult(name, ok, latency_ms, health, now, error)

    def health_check(self, name: str, *, timeout_s: float = 10.0) -> HealthCheckResult:
        return run_sync(self.ahealth_check(name, timeout_s=timeout_s))

    # -- loading ----------------------------------------------------------------------------
    def refresh(self) -> None:
        """Reload models and assignments from the store (changes made by other processes).

        Model objects keep their identity; metrics not yet written keep their local values.
        """

        def fn(s: Session) -> tuple[list[ModelRow], list[ProgramRow], list[ProgramModelRow]]:
            return (
                list(s.scalars(select(ModelRow))),
                list(s.scalars(select(ProgramRow))),
                list(s.scalars(select(ProgramModelRow).order_by(ProgramModelRow.created_at, ProgramModelRow.id))),
            )

        model_rows, program_rows, pm_rows = self.store.read(fn)
        with self._lock:
            fresh: dict[str, Model] = {}
            for row in model_rows:
                loaded = model_from_row(row)
                m = self._models.get(row.id)
                if m is None:
                    m = loaded
                else:
                    keep = row.id in self._dirty
                    for f in Model.__dataclass_fields__:
                        if f in ("revision",) or (keep and f in _METRIC_FIELDS):
                            continue
                        old, new = getattr(m, f), getattr(loaded, f)
                        if f in _UPDATABLE and old != new:
                            m.revision += 1
                        setattr(m, f, new)
                fresh[row.id] = m
            self._models = fresh
            self._by_name = {m.name: m for m in fresh.values()}
            names = {r.id: r.name for r in program_rows}
            self._programs = {r.name: r.id for r in program_rows}
            grouped: dict[str, list[ProgramModel]] = {}
            for r in pm_rows:
                model = fresh.get(r.model_id)
                if model is None or r.program_id not in names:
                    continue
                grouped.setdefault(names[r.program_id], []).append(
                    ProgramModel(
                        r.id, names[r.program_id], r.program_id, model, Strategy(r.routing_strategy),
                        r.priority, r.weight, dict(r.conditions or {}), r.total_requests,
                        r.successful_requests, r.total_cost_usd,
                    )
                )
            self._assignments = {}
            for program, pms in grouped.items():
                self._set_assignments(program, pms)
            self.generation += 1


class _StaleStatus(DSPexError):
    """Internal: the stored status was not the one this process saw."""


_METRIC_FIELDS = frozenset({"average_latency_ms", "success_rate", "last_health_check_s", "last_call_s"})
