"""What an optimizer run produced, as a typed record the model registry can store.

The compiled program itself is the primary result (``optimizer.compile(...)`` returns it, and
``program.save("prog.json")`` / ``load`` work as for any program). The record beside it,
``program.optimization_result``, keeps every candidate's score, configuration and learned
state, the search trials, the Pareto front and hypervolume history of multi-objective runs,
and the LM usage of the run. ``to_dict`` is JSON; live program objects never leave memory.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from dspex.errors import ConfigurationError

__all__ = ["CandidateRecord", "OptimizationResult", "TrialRecord"]


@dataclass
class CandidateRecord:
    """One candidate program. ``score`` is in percent on the set it was scored on (``kind``:
    "full" = the whole valset, "minibatch" = a sample); ``config`` says what made it."""

    index: int
    score: float | None
    config: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] | None = None
    kind: str = "full"
    #: multi-objective runs: e.g. {"accuracy": 0.81, "latency_ms": 240.0, "cost_usd": 1.2e-5}
    objectives: dict[str, float] | None = None
    program: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name != "program"}


@dataclass
class TrialRecord:
    """One trial of a search. ``state`` is "complete" or "failed" (after its retries)."""

    number: int
    params: dict[str, Any]
    values: dict[str, float] | None = None
    state: str = "complete"
    attempts: int = 1
    duration_s: float = 0.0
    error: str | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def value(self) -> float | None:
        """The single objective's value (the first one)."""
        if not self.values:
            return None
        return next(iter(self.values.values()))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = _plain(asdict(self))
        return out


@dataclass
class OptimizationResult:
    optimizer: str
    best_score: float | None = None
    baseline_score: float | None = None
    candidates: list[CandidateRecord] = field(default_factory=list)
    trials: list[TrialRecord] = field(default_factory=list)
    iterations: int = 0
    duration_s: float = 0.0
    seed: int | None = None
    #: LM usage of the whole run, as metered (calls, calls that reached a provider, cost)
    lm_calls: int = 0
    paid_calls: int = 0
    cost_usd: float = 0.0
    #: multi-objective runs: the non-dominated candidates, and hypervolume after each generation
    pareto_front: list[CandidateRecord] = field(default_factory=list)
    hypervolume_history: list[float] = field(default_factory=list)
    #: index (into ``candidates``) of the returned program
    chosen_index: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def best(self) -> CandidateRecord | None:
        if self.chosen_index is not None:
            for c in self.candidates:
                if c.index == self.chosen_index:
                    return c
        full = [c for c in self.candidates if c.score is not None and c.kind == "full"]
        return max(full, key=lambda c: c.score or 0.0) if full else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("candidates", "pareto_front"):
                out[f.name] = [c.to_dict() for c in value]
            elif f.name == "trials":
                out[f.name] = [t.to_dict() for t in value]
            else:
                out[f.name] = _plain(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OptimizationResult:
        data = dict(data)
        data["candidates"] = [CandidateRecord(**c) for c in data.get("candidates", [])]
        data["pareto_front"] = [CandidateRecord(**c) for c in data.get("pareto_front", [])]
        data["trials"] = [TrialRecord(**t) for t in data.get("trials", [])]
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def save(self, path: str | Path) -> None:
        path = Path(path)
        if path.suffix != ".json":
            raise ConfigurationError(f"Save an OptimizationResult to a .json file, got {str(path)!r}.")
        path.write_text(json.dumps(self.to_dict(), indent=2, default=str), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> OptimizationResult:
        path = Path(path)
        if not path.exists():
            raise ConfigurationError(f"No optimization result at {str(path)!r}.")
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def __getstate__(self) -> dict[str, Any]:
        # Pickling (save_program=True, Ray) keeps the record, not every candidate program.
        state = dict(self.__dict__)
        state["candidates"] = [_without_program(c) for c in self.candidates]
        state["pareto_front"] = [_without_program(c) for c in self.pareto_front]
        return state

    def __repr__(self) -> str:
        return (
            f"OptimizationResult(optimizer={self.optimizer!r}, best_score={self.best_score}, "
            f"candidates={len(self.candidates)}, trials={len(self.trials)}, lm_calls={self.lm_calls})"
        )


def _without_program(c: CandidateRecord) -> CandidateRecord:
    return CandidateRecord(**{f.name: getattr(c, f.name) for f in fields(c) if f.name != "program"})


def _plain(value: Any) -> Any:
    """JSON-friendly: tuples to lists, unknown objects to their repr."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if hasattr(value, "toDict"):
        return _plain(value.toDict())
    return repr(value)
