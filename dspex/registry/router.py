"""``ModelRouter``: picks a model for each call of a program and runs the call with fallbacks.

``select_model(program, inputs, context)`` follows the seed (§1.3): the program's assignments
by priority, filtered to available models whose conditions hold, then the strategy dispatch
(``strategies.py``); when none qualifies, the first available assignment, then (unlike the
seed, as LiteLLM's users expect) any available model in the registry. Beyond the seed: models
whose context window the call does not fit are ruled out, cooling models are skipped
(``cooldown.py``), and ``explain()`` says why.

``aexecute(program, inputs, call)`` runs ``call(lm, assignment)`` on the chosen model. A failure
that another model might not have (provider errors: 429, 5xx, timeouts, auth, quota, unknown
model, context window) moves *at once* to the next model of the route's fallback chain (at
most ``max_hops``); when no other model is left, a retryable failure is retried on the same
model after a backoff that honours Retry-After. A bad request is raised as is; a
content-policy refusal and an unparseable reply (``AdapterParseError``) fall through only when
configured. Every attempt updates the model's moving averages, the assignment's totals, the
cooldown tracker and the execution log (batched, off the hot path).
"""

from __future__ import annotations

import asyncio
import random as _random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from dspex import telemetry
from dspex.errors import (
    AdapterParseError,
    BadRequest,
    ConfigurationError,
    ContentPolicyViolation,
    Overloaded,
    ProviderError,
    RoutingError,
)
from dspex.registry.assignment import ProgramModel, Strategy, unmet_condition
from dspex.registry.cooldown import (
    CooldownPolicy,
    CooldownState,
    CooldownTracker,
    counts_for_cooldown,
)
from dspex.registry.model import Model, ModelStatus
from dspex.registry.registry import ModelRegistry
from dspex.registry.route import Route
from dspex.registry.strategies import (
    RouteRequest,
    RoutingContext,
    RoutingStrategy,
    default_strategies,
)
from dspex.store import ExecutionLog, ExecutionRecord
from dspex.telemetry import names
from dspex.utils.asyncio_bridge import run_sync

if TYPE_CHECKING:
    from dspex.clients.base_lm import BaseLM

__all__ = ["CallUsage", "ModelRouter"]

T = TypeVar("T")

_ROUTE = names.ROUTER_ROUTE  # one per decision: the first choice, and each fallback
_FALLBACK = ("dspex", "router", "fallback")
_RETRY = ("dspex", "router", "retry")
_CALL = ("dspex", "router", "call")
_DISPATCH = (Strategy.COST_OPTIMIZED, Strategy.LATENCY_OPTIMIZED, Strategy.LOAD_BALANCED)


class CallUsage(NamedTuple):
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    cache_hit: bool = False


class ModelRouter:
    """Routes calls of programs to models of a ``ModelRegistry``."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        cooldown: CooldownPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = _random.random,
        strategies: Mapping[Strategy, RoutingStrategy] | None = None,
        max_hops: int = 5,
        fallback_to_any_model: bool = True,
        fallback_on_content_policy: bool = False,
        fallback_on_parse_error: bool = False,
        num_retries: int = 2,
        retry_backoff_s: float = 0.25,
        max_backoff_s: float = 8.0,
        max_retry_after_s: float = 30.0,
        execution_log: ExecutionLog | bool = True,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_hops < 0 or num_retries < 0:
            raise ConfigurationError("max_hops and num_retries must be >= 0.")
        self.registry = registry
        self.random = random
        self.strategies: dict[Strategy, RoutingStrategy] = {**default_strategies(), **(strategies or {})}
        self.max_hops = int(max_hops)
        self.fallback_to_any_model = fallback_to_any_model
        self.fallback_on_content_policy = fallback_on_content_policy
        self.fallback_on_parse_error = fallback_on_parse_error
        self.num_retries = int(num_retries)
        self.retry_backoff_s = float(retry_backoff_s)
        self.max_backoff_s = float(max_backoff_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.sleep = sleep
        self.cooldowns = CooldownTracker(cooldown, clock=clock, can_cool=self._can_cool)
        if execution_log is True:
            execution_log = ExecutionLog(registry.store)
            self._own_log = True
        else:
            self._own_log = False
        self.execution_log: ExecutionLog | None = execution_log or None
        if self.execution_log is not None:
            registry.attach_log(self.execution_log)
        self._lms: dict[str, tuple[int, BaseLM]] = {}
        #: set by a HealthChecker that wants to hear about models to probe soon
        self.on_check_requested: Callable[[Model], None] | None = None

    # -- selection --------------------------------------------------------------------------
    def select_model(self, program: str, inputs: Any = None, context: Mapping[str, Any] | None = None) -> ProgramModel:
        """The assignment that would serve this call (takes a probe slot if it is half-open)."""
        chosen = self.route(program, inputs, context).chosen
        assert chosen is not None
        return chosen

    def explain(self, program: str, inputs: Any = None, context: Mapping[str, Any] | None = None,
                *, output_tokens: int = 0) -> str:
        """Why a call with these inputs would go where it goes (changes no state)."""
        try:
            return self.route(program, inputs, context, output_tokens=output_tokens, dry_run=True).explain()
        except RoutingError as exc:
            return str(exc)

    def route(
        self,
        program: str,
        inputs: Any = None,
        context: Mapping[str, Any] | None = None,
        *,
        output_tokens: int = 0,
        dry_run: bool = False,
    ) -> Route:
        pms = self.registry.assignments(program)
        if not pms:
            raise RoutingError(
                f"No models are assigned to program {program!r}.",
                hint="Assign one with registry.assign(program, model).",
                program=program,
            )
        req = RouteRequest(program, {} if inputs is None else inputs, context or {}, output_tokens)
        tracker = self.cooldowns
        candidates: list[ProgramModel] = []
        skipped: list[tuple[ProgramModel, str]] = []
        for pm in pms:
            m = pm.model
            if m.status is not ModelStatus.AVAILABLE:
                skipped.append((pm, f"status is {m.status.value}"))
            elif m.context_window is not None and req.needed_tokens() > m.context_window:
                skipped.append((pm, f"~{req.needed_tokens()} tokens exceed its context window {m.context_window}"))
            elif not tracker.available(m.name):
                st = tracker.state(m.name)
                why = f"cooling down ({st.reason}; {st.remaining_s:.1f} s left)" if st else "probe in flight"
                skipped.append((pm, why))
            elif pm.conditions and (unmet := unmet_condition(pm, req.input_chars(), req.context, req.output_tokens)):
                skipped.append((pm, unmet))
            else:
                candidates.append(pm)
        route = Route(self, req, pms, candidates, skipped)
        trialled: list[str] = []  # models whose slot a strategy already took for this call

        def trial(m: Model) -> bool:
            if dry_run or not tracker.try_trial(m.name):
                return False
            trialled.append(m.name)
            return True

        ctx = RoutingContext(
            now_s=self.registry.clock(),
            stale_after_s=self.registry.stale_after_s,
            random=self.random,
            trial=trial,
            request_check=(lambda m: None) if dry_run else self._request_check,
        )
        pool = list(candidates)
        while pool:
            pm, reason = self._dispatch(pool, req, ctx)
            name = pm.model.name
            if dry_run or name in trialled or not tracker.needs_probe(name) or tracker.acquire(name):
                route.chosen, route.reason = pm, reason
                break
            pool.remove(pm)  # another call took its half-open probe slot meanwhile
        if route.chosen is None:
            self._fallback_to_any(route, dry_run)
        if route.chosen is None:
            raise RoutingError(
                f"No model can serve program {program!r} now.\n{route.explain()}",
                hint="Approve a model, wait for a cooldown to end, or assign a model whose context window fits.",
                program=program,
            )
        route.tried.append(route.chosen.model.name)
        if not dry_run and telemetry.has_handlers(_ROUTE):
            telemetry.emit(
                _ROUTE,
                {"candidates": len(candidates)},
                {"program": program, "model": route.chosen.model.name, "strategy": route.chosen.strategy.value,
                 "fallback": False, "reason": route.reason},
            )
        return route

    def _dispatch(
        self, candidates: list[ProgramModel], req: RouteRequest, ctx: RoutingContext
    ) -> tuple[ProgramModel, str]:
        if any(pm.strategy is Strategy.PRIMARY for pm in candidates):
            return self.strategies[Strategy.PRIMARY].choose(candidates, req, ctx)
        for strat in _DISPATCH:
            group = [pm for pm in candidates if pm.strategy is strat]
            if group:
                return self.strategies[strat].choose(group, req, ctx)
        return self.strategies[Strategy.FALLBACK].choose(candidates, req, ctx)

    def _fallback_to_any(self, route: Route, dry_run: bool) -> None:
        """No assignment qualified: the seed's first available assignment (its conditions
        waived, but it must fit and not be cooling), then any available model."""
        tracker = self.cooldowns
        need = route.request.needed_tokens()
        for pm in route._order():
            m = pm.model
            if m.status is not ModelStatus.AVAILABLE or not m.fits(need) or not tracker.available(m.name):
                continue
            if not dry_run and tracker.needs_probe(m.name) and not tracker.acquire(m.name):
                continue
            assigned = bool(pm.id)
            route.chosen = pm
            route.reason = (
                "no assignment met its conditions; first available assignment" if assigned
                else "no assigned model can serve; an available model from the registry"
            )
            return
        route.reason = "every model is unavailable, cooling, or too small for the input"

    def _request_check(self, model: Model) -> None:
        if self.on_check_requested is not None:
            self.on_check_requested(model)

    def _can_cool(self, name: str) -> bool:
        """False when cooling ``name`` would leave some program with no model able to serve."""
        tracker = self.cooldowns
        for pms in list(self.registry._assignments.values()):
            if not any(pm.model.name == name for pm in pms):
                continue
            if any(
                pm.model.name != name and pm.model.status is ModelStatus.AVAILABLE and tracker.available(pm.model.name)
                for pm in pms
            ):
                continue
            if self.fallback_to_any_model and any(
                m.name != name and tracker.available(m.name) for m in self.registry.models(ModelStatus.AVAILABLE)
            ):
                continue
            return False
        return True

    def cooldown_states(self) -> list[CooldownState]:
        """Every model that is cooling down or half-open: model, reason, failures, deadline."""
        return self.cooldowns.states()

    # -- execution --------------------------------------------------------------------------
    def lm(self, model: Model) -> BaseLM:
        """The LM client of ``model`` (built once per model revision)."""
        cached = self._lms.get(model.id)
        if cached is not None and cached[0] == model.revision:
            return cached[1]
        lm = self.registry.lm_factory(model)
        self._lms[model.id] = (model.revision, lm)
        return lm

    async def aexecute(
        self,
        program: str,
        inputs: Any,
        call: Callable[[BaseLM, ProgramModel], Awaitable[T]],
        *,
        context: Mapping[str, Any] | None = None,
        output_tokens: int = 0,
        version_id: str | None = None,
        measure: Callable[[T], CallUsage] | None = None,
    ) -> T:
        """Run ``call(lm, assignment)`` on the routed model, falling back on failure."""
        route = self.route(program, inputs, context, output_tokens=output_tokens)
        pm = route.chosen
        assert pm is not None
        hop = 0
        retries = 0
        errors: list[tuple[str, BaseException]] = []
        with telemetry.span(_CALL, program=program) as sp:
            while True:
                m = pm.model
                t0 = time.perf_counter()
                try:
                    result = await call(self.lm(m), pm)
                except Exception as exc:
                    latency_ms = (time.perf_counter() - t0) * 1000.0
                    self._record_failure(program, version_id, pm, exc, latency_ms, hop)
                    errors.append((m.name, exc))
                    if not self._falls_through(exc):
                        raise
                    if hop >= self.max_hops:
                        raise self._exhausted(program, errors) from exc
                    nxt = route.next(pm, exc)
                    if nxt is not None:
                        hop += 1
                        route.tried.append(nxt.model.name)
                        telemetry.emit(_FALLBACK, {"hop": hop}, {"program": program, "from_model": m.name,
                                                                "to_model": nxt.model.name,
                                                                "error_type": type(exc).__name__})
                        telemetry.emit(_ROUTE, {"candidates": 1}, {"program": program, "model": nxt.model.name,
                                                                  "strategy": nxt.strategy.value, "fallback": True,
                                                                  "reason": f"{m.name} raised {type(exc).__name__}"})
                        pm = nxt
                        continue
                    delay = self._backoff_s(retries, exc)
                    if delay is None:
                        raise self._exhausted(program, errors) from exc
                    telemetry.emit(_RETRY, {"delay_s": delay, "retry": retries + 1},
                                   {"program": program, "model": m.name, "error_type": type(exc).__name__})
                    await self.sleep(delay)
                    retries += 1
                    hop += 1
                    route.tried.append(m.name)
                    continue
                except BaseException:
                    self.cooldowns.release(m.name)  # cancelled: free a probe slot, count nothing
                    raise
                latency_ms = (time.perf_counter() - t0) * 1000.0
                usage = measure(result) if measure is not None else CallUsage()
                self._record_success(program, version_id, pm, usage, latency_ms, hop)
                sp.set(hops=hop)
                sp.meta(model=m.name)
                return result

    def execute(
        self,
        program: str,
        inputs: Any,
        call: Callable[[BaseLM, ProgramModel], Awaitable[T]],
        **kwargs: Any,
    ) -> T:
        """``aexecute`` from synchronous code (on dspex's shared I/O loop)."""
        return run_sync(self.aexecute(program, inputs, call, **kwargs))

    async def arun_program(
        self,
        program: str,
        module: Any,
        inputs: Mapping[str, Any],
        *,
        context: Mapping[str, Any] | None = None,
        version_id: str | None = None,
    ) -> Any:
        """Run a dspex module (``module(**inputs)``) with the routed model as its LM (§1.4).

        Falls back like ``aexecute``; with ``fallback_on_parse_error`` an ``AdapterParseError``
        (the model's reply did not fit the signature) also tries the next model.
        """
        from dspex.settings import settings

        async def call(lm: BaseLM, pm: ProgramModel) -> Any:
            with settings.context(lm=lm):
                acall = getattr(module, "acall", None)
                if acall is not None:
                    return await acall(**inputs)
                return await asyncio.to_thread(module, **inputs)

        return await self.aexecute(program, dict(inputs), call, context=context, version_id=version_id)

    def _falls_through(self, exc: BaseException) -> bool:
        if isinstance(exc, ContentPolicyViolation):
            return self.fallback_on_content_policy
        if isinstance(exc, BadRequest):
            return False
        if isinstance(exc, AdapterParseError):
            return self.fallback_on_parse_error
        # provider failures, an overloaded replica, a model this process cannot configure
        # (e.g. its key's environment variable is unset here): another model may work
        return isinstance(exc, ProviderError | Overloaded | ConfigurationError)

    def _backoff_s(self, retries: int, exc: BaseException) -> float | None:
        """How long to wait before retrying the same model, or None to give up."""
        retryable = bool(getattr(exc, "retryable", False))
        if not retryable or retries >= self.num_retries:
            return None
        retry_after = getattr(exc, "retry_after_s", None)
        if retry_after is not None:
            return float(retry_after) if retry_after <= self.max_retry_after_s else None
        return min(self.retry_backoff_s * 2**retries * (0.5 + self.random()), self.max_backoff_s)

    def _exhausted(self, program: str, errors: list[tuple[str, BaseException]]) -> RoutingError:
        tried = ", ".join(f"{name!r} ({type(e).__name__}: {e})" for name, e in errors)
        return RoutingError(
            f"No model could serve program {program!r}; tried {tried}.",
            hint="Check the models' health (registry.health_check), cooldowns (router.cooldown_states()), "
            "or assign more fallback models.",
            program=program,
            attempts=[(name, type(e).__name__) for name, e in errors],
        )

    # -- bookkeeping ------------------------------------------------------------------------
    def _record_failure(
        self, program: str, version_id: str | None, pm: ProgramModel, exc: BaseException, latency_ms: float, hop: int
    ) -> None:
        m = pm.model
        counted = counts_for_cooldown(exc)
        # The success rate measures whether the model served; a request the caller got wrong
        # (bad request, content policy, too long) says nothing about the model.
        if counted or isinstance(exc, AdapterParseError):
            self.registry.observe(m, success=False, latency_ms=None, assignment=pm if pm.id else None)
        elif pm.id:
            pm.total_requests += 1
        self.cooldowns.record(m.name, success=False, counted=counted)
        if self.execution_log is not None:
            self.execution_log.record(ExecutionRecord(
                model=m.name, status="error", latency_ms=latency_ms, at_s=time.time(), program=program,
                version_id=version_id, model_id=m.id, assignment_id=pm.id or None,
                error_type=type(exc).__name__, hop=hop,
            ))

    def _record_success(
        self, program: str, version_id: str | None, pm: ProgramModel, usage: CallUsage, latency_ms: float, hop: int
    ) -> None:
        m = pm.model
        if m.priced:
            cost = m.cost_usd(usage.input_tokens, usage.output_tokens)
        else:
            cost = usage.cost_usd or 0.0
        if usage.cache_hit:
            # Nothing was spent, and a cached reply says nothing about the model now: no metrics,
            # and a probe slot it held is freed without closing a cooldown.
            cost = 0.0
            if pm.id:
                pm.total_requests += 1
                pm.successful_requests += 1
            self.cooldowns.release(m.name)
        else:
            self.registry.observe(m, success=True, latency_ms=latency_ms, assignment=pm if pm.id else None,
                                  cost_usd=cost)
            self.cooldowns.record(m.name, success=True)
        if self.execution_log is not None:
            self.execution_log.record(ExecutionRecord(
                model=m.name, status="success", latency_ms=latency_ms, at_s=time.time(), program=program,
                version_id=version_id, model_id=m.id, assignment_id=pm.id or None,
                input_tokens=usage.input_tokens, output_tokens=usage.output_tokens, cost_usd=cost, hop=hop,
            ))

    def close(self) -> None:
        """Flush and stop the execution log this router created."""
        if self._own_log and self.execution_log is not None:
            self.execution_log.close()
