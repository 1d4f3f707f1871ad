"""``Route``: one call's routing decision, its fallback chain, and the explanation of both."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from dspex.errors import ContextWindowExceeded
from dspex.registry.assignment import ProgramModel, Strategy, unmet_condition
from dspex.registry.model import HealthStatus, ModelStatus
from dspex.registry.strategies import RouteRequest

if TYPE_CHECKING:
    from dspex.registry.router import ModelRouter

__all__ = ["Route"]

_HEALTH_RANK = {
    HealthStatus.HEALTHY: 0,
    HealthStatus.UNKNOWN: 0,
    HealthStatus.DEGRADED: 1,
    HealthStatus.STALE: 2,
    HealthStatus.UNHEALTHY: 3,
}


class Route:
    """The chosen assignment (``chosen``), why (``reason``), what was ruled out (``skipped``),
    and ``next()``: the next model to try after a failure."""

    __slots__ = ("_assignments", "_router", "candidates", "chosen", "reason", "request", "skipped", "tried")

    def __init__(
        self,
        router: ModelRouter,
        request: RouteRequest,
        assignments: tuple[ProgramModel, ...],
        candidates: list[ProgramModel],
        skipped: list[tuple[ProgramModel, str]],
    ) -> None:
        self._router = router
        self.request = request
        self._assignments = assignments
        self.candidates = candidates
        self.skipped = skipped
        self.chosen: ProgramModel | None = None
        self.reason = ""
        #: names of the models tried so far, in order
        self.tried: list[str] = []

    # -- the fallback chain -------------------------------------------------------------------
    def _order(self) -> Iterator[ProgramModel]:
        """Fallback assignments, then the other assignments (each group: conditions met first,
        then by health), then any other available model in the registry."""
        router = self._router
        now = router.registry.clock()
        stale = router.registry.stale_after_s
        req = self.request

        def key(pm: ProgramModel) -> tuple[int, int]:
            unmet = unmet_condition(pm, req.input_chars(), req.context, req.output_tokens) is not None
            return (int(unmet), _HEALTH_RANK[pm.model.health_status(now, stale)])

        fallbacks = [pm for pm in self._assignments if pm.strategy is Strategy.FALLBACK]
        others = [pm for pm in self._assignments if pm.strategy is not Strategy.FALLBACK]
        yield from sorted(fallbacks, key=key)
        yield from sorted(others, key=key)
        if router.fallback_to_any_model:
            assigned = {pm.model.name for pm in self._assignments}
            extra = [m for m in router.registry.models(ModelStatus.AVAILABLE) if m.name not in assigned]
            extra.sort(key=lambda m: (_HEALTH_RANK[m.health_status(now, stale)], m.name))
            for m in extra:
                yield ProgramModel("", req.program, "", m, Strategy.FALLBACK, priority=-1)

    def next(self, failed: ProgramModel, error: BaseException | None = None) -> ProgramModel | None:
        """The next model to try after ``failed`` raised ``error``, or None when none is left.

        Candidates must be available, untried, not cooling, and fit the context window; after
        a ``ContextWindowExceeded`` only a model with a larger window than the failed one's.
        """
        tracker = self._router.cooldowns
        need = self.request.needed_tokens()
        larger_than = failed.model.context_window if isinstance(error, ContextWindowExceeded) else None
        for pm in self._order():
            m = pm.model
            if m.name in self.tried or m.status is not ModelStatus.AVAILABLE or not m.fits(need):
                continue
            if larger_than is not None and (m.context_window is not None and m.context_window <= larger_than):
                continue
            if not tracker.available(m.name):
                continue
            if tracker.needs_probe(m.name) and not tracker.acquire(m.name):
                continue
            return pm
        return None

    # -- explanation -------------------------------------------------------------------------
    def explain(self) -> str:
        """Why the chosen model was chosen, what was ruled out, and what happens on error."""
        req = self.request
        lines = []
        if self.chosen is not None:
            lines.append(f"Program {req.program!r} -> model {self.chosen.model.name!r}: {self.reason}.")
        else:
            lines.append(f"Program {req.program!r}: no model can serve this call ({self.reason}).")
        reserve = f" + {req.output_tokens} reserved for the reply" if req.output_tokens else ""
        lines.append(f"  input: {req.input_chars()} characters, ~{req.input_tokens()} tokens{reserve}")
        if self.candidates:
            lines.append("  candidates: " + ", ".join(pm.describe() for pm in self.candidates))
        for pm, why in self.skipped:
            lines.append(f"  ruled out {pm.describe()}: {why}")
        router = self._router
        need = req.needed_tokens()
        chain = [
            pm.model.name
            for pm in self._order()
            if (self.chosen is None or pm.model is not self.chosen.model)
            and pm.model.status is ModelStatus.AVAILABLE
            and pm.model.fits(need)
        ]
        if chain:
            shown = ", ".join(repr(n) for n in chain[: router.max_hops])
            lines.append(f"  on error, in order: {shown} (at most {router.max_hops} fallbacks; models cooling "
                         "down by then are skipped)")
        else:
            lines.append("  on error: no other model to fall back to")
        if self.tried[1:]:
            lines.append("  tried: " + " -> ".join(repr(n) for n in self.tried))
        return "\n".join(lines)

    def __repr__(self) -> str:
        name = self.chosen.model.name if self.chosen is not None else None
        return f"Route(program={self.request.program!r}, model={name!r}, reason={self.reason!r})"
