"""The server's runtime state: current faults, rate windows, counters, per model.

Pure logic with an injected clock (a callable returning seconds), so the rate limiter and
fault decisions are tested without a server or sleeping. Used from the server's event loop
only, hence no locks.
"""

from __future__ import annotations

import random
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import NotFound
from dspex.sim._draw import digest
from dspex.sim.config import FaultSpec, ModelSpec, SimConfig

__all__ = ["Counters", "FaultDecision", "ModelRuntime", "RateWindow", "SimState"]

Clock = Callable[[], float]


class RateWindow:
    """Admitted requests in the last ``window_s`` seconds (a rolling minute by default)."""

    def __init__(self, window_s: float = 60.0) -> None:
        self.window_s = window_s
        self._times: deque[float] = deque()

    def _expire(self, now: float) -> None:
        while self._times and self._times[0] <= now - self.window_s:
            self._times.popleft()

    def try_admit(self, limit: int | None, now: float) -> float | None:
        """Admit (and record) a request, or return the seconds until one slot frees up."""
        self._expire(now)
        if limit is not None and len(self._times) >= limit:
            return max(0.001, self._times[len(self._times) - limit] + self.window_s - now)
        self._times.append(now)
        return None

    def used(self, now: float) -> int:
        self._expire(now)
        return len(self._times)

    def clear(self) -> None:
        self._times.clear()


@dataclass
class Counters:
    requests: int = 0
    ok: int = 0
    errors: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    streamed: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    task_correct: int = 0
    task_wrong: int = 0
    by_api: Counter[str] = field(default_factory=Counter)

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "errors": {str(k): v for k, v in sorted(self.errors.items())},
            "faults": dict(self.faults),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": round(self.cost_usd, 10),
            "streamed": self.streamed,
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "task_answers": {"correct": self.task_correct, "wrong": self.task_wrong},
            "by_api": dict(self.by_api),
        }


@dataclass
class FaultDecision:
    """What happens to one request before the model answers. ``kind`` None means: answer."""

    kind: str | None = None
    status: int = 200
    retry_after_s: float | None = None
    hang_s: float = 0.0


class ModelRuntime:
    def __init__(self, spec: ModelSpec, seed: int) -> None:
        self.spec = spec
        self.faults = spec.faults.model_copy()
        self.window = RateWindow()
        self.counters = Counters()
        self.seed = seed
        self.rng = random.Random()
        self.reseed()

    def reseed(self) -> None:
        """Fault and jitter draws are sequential (not from the request hash, so a retry can
        succeed); reseeding makes a run after a reset repeat exactly."""
        self.rng.seed(int.from_bytes(digest("faults", self.seed, self.spec.name)[:8], "big"))


class SimState:
    def __init__(self, config: SimConfig, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.started = clock()
        self.models: dict[str, ModelRuntime] = {
            m.name: ModelRuntime(m, config.seed) for m in config.models
        }
        self.unknown_model_requests = 0

    def runtime(self, name: str) -> ModelRuntime | None:
        return self.models.get(name)

    def decide(self, rt: ModelRuntime) -> FaultDecision:
        """Outage, then the rpm limit, then the hang and error draws."""
        f = rt.faults
        if f.outage:
            return FaultDecision("outage", 503)
        wait_s = rt.window.try_admit(f.rpm_limit, self.clock())
        if wait_s is not None:
            return FaultDecision("rate_limited", 429, retry_after_s=wait_s)
        if f.hang_rate and rt.rng.random() < f.hang_rate:
            return FaultDecision("hang", 504, hang_s=f.hang_s)
        if f.error_rate and rt.rng.random() < f.error_rate:
            return FaultDecision("error", f.error_status)
        return FaultDecision()

    def malformed(self, rt: ModelRuntime) -> bool:
        rate = rt.faults.malformed_rate
        return bool(rate) and rt.rng.random() < rate

    def latency_s(self, rt: ModelRuntime, output_tokens: int) -> float:
        lat = rt.spec.latency
        jitter = rt.rng.random() * lat.jitter_ms if lat.jitter_ms else 0.0
        return (
            lat.base_ms
            + lat.per_output_token_ms * output_tokens
            + jitter
            + rt.faults.extra_latency_ms
        ) / 1000.0

    def rate_headers(self, rt: ModelRuntime) -> dict[str, str]:
        limit = rt.faults.rpm_limit
        if limit is None:
            return {}
        used = rt.window.used(self.clock())
        return {
            "x-ratelimit-limit-requests": str(limit),
            "x-ratelimit-remaining-requests": str(max(0, limit - used)),
        }

    # -- admin -------------------------------------------------------------------------------
    def _targets(self, model: str) -> list[ModelRuntime]:
        if model == "*":
            return list(self.models.values())
        rt = self.models.get(model)
        if rt is None:
            raise NotFound(
                f"The simulator has no model {model!r}; its models are {sorted(self.models)}."
            )
        return [rt]

    def set_faults(self, model: str, patch: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """Merge ``patch`` into the faults of ``model`` ("*" for all); validated as a whole
        before anything changes (raises pydantic's ValidationError, or NotFound)."""
        targets = self._targets(model)
        new = [FaultSpec.model_validate({**rt.faults.model_dump(), **patch}) for rt in targets]
        for rt, faults in zip(targets, new, strict=True):
            rt.faults = faults
        return {rt.spec.name: rt.faults.model_dump() for rt in targets}

    def reset(self, *, counters: bool = True, faults: bool = True) -> None:
        for rt in self.models.values():
            if counters:
                rt.counters = Counters()
            if faults:
                rt.faults = rt.spec.faults.model_copy()
                rt.window.clear()
                rt.reseed()
        if counters:
            self.unknown_model_requests = 0

    def stats(self) -> dict[str, Any]:
        models = {name: rt.counters.to_dict() for name, rt in self.models.items()}
        totals = Counters()
        for rt in self.models.values():
            c = rt.counters
            totals.requests += c.requests
            totals.ok += c.ok
            totals.errors.update(c.errors)
            totals.faults.update(c.faults)
            totals.prompt_tokens += c.prompt_tokens
            totals.completion_tokens += c.completion_tokens
            totals.cost_usd += c.cost_usd
            totals.streamed += c.streamed
            totals.in_flight += c.in_flight
            totals.max_in_flight = max(totals.max_in_flight, c.max_in_flight)
            totals.task_correct += c.task_correct
            totals.task_wrong += c.task_wrong
            totals.by_api.update(c.by_api)
        return {
            "uptime_s": round(self.clock() - self.started, 3),
            "models": models,
            "totals": totals.to_dict(),
            "unknown_model_requests": self.unknown_model_requests,
        }
