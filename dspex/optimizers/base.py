"""The optimizer base class (DSPy's ``Teleprompter``) and what every run shares.

An optimizer takes a student program and data and returns a new program:

    optimizer = BootstrapFewShot(metric=exact_match, max_bootstrapped_demos=4)
    compiled = optimizer.compile(student, trainset=train)     # keyword-only data, as in DSPy

Every run: one ``("dspex","optimizer","compile")`` span; one ``("dspex","optimizer",
"iteration")`` event per iteration (score, best_score, duration_s; optimizer, iteration,
converged); a progress bar; LM usage metered over the whole run; and the returned program
marked ``_compiled`` with ``program.optimization_result`` (an ``OptimizationResult``).
"""

from __future__ import annotations

import hashlib
import inspect
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dspex import telemetry
from dspex.errors import OptimizerError
from dspex.optimizers.evaluation import Meter, metered
from dspex.optimizers.result import CandidateRecord, OptimizationResult, TrialRecord
from dspex.primitives.module import Module
from dspex.telemetry import names

__all__ = ["Optimizer", "OptimizerInfo", "ParamInfo", "Run", "Teleprompter", "check_dataset", "check_program"]


@dataclass(frozen=True)
class ParamInfo:
    name: str
    type: str
    default: Any
    description: str
    required: bool = False


@dataclass(frozen=True)
class OptimizerInfo:
    name: str
    description: str
    parameters: tuple[ParamInfo, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "parameters": [
                {"name": p.name, "type": p.type, "default": p.default, "description": p.description, "required": p.required}
                for p in self.parameters
            ],
        }


class Teleprompter:
    """Base class of the optimizers. Subclasses implement ``compile`` and document every
    constructor parameter in ``param_docs`` (``info()`` is built from them)."""

    #: one sentence for ``info()``
    description: ClassVar[str] = ""
    #: constructor parameter -> description
    param_docs: ClassVar[dict[str, str]] = {}

    def compile(
        self,
        student: Module,
        *,
        trainset: list[Any],
        teacher: Module | None = None,
        valset: list[Any] | None = None,
        **kwargs: Any,
    ) -> Module:
        raise NotImplementedError(f"{type(self).__name__} must implement compile(student, *, trainset, ...).")

    def get_params(self) -> dict[str, Any]:
        """The optimizer's settings (DSPy's ``get_params``)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    @classmethod
    def info(cls) -> OptimizerInfo:
        """Name, description and every constructor parameter (name, type, default, description)."""
        params = []
        for name, p in inspect.signature(cls.__init__).parameters.items():
            if name == "self" or p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL):
                continue
            required = p.default is inspect.Parameter.empty
            params.append(
                ParamInfo(
                    name=name,
                    type=_type_name(p.annotation),
                    default=None if required else p.default,
                    description=cls.param_docs.get(name, ""),
                    required=required,
                )
            )
        return OptimizerInfo(cls.__name__, cls.description, tuple(params))

    # -- shared plumbing -----------------------------------------------------------------------
    @contextmanager
    def _run(self, *, seed: int | None = None, progress: bool = True) -> Iterator[Run]:
        run = Run(type(self).__name__, seed=seed, progress=progress)
        with telemetry.span(names.OPTIMIZER_COMPILE, optimizer=run.optimizer), metered() as meter:
            run.meter = meter
            yield run
        run.finished_s = time.perf_counter()

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.get_params().items() if k != "metric" and not callable(v)}
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"


#: DSPy 3 calls its base class ``Teleprompter``; the seed and the issue say ``Optimizer``.
Optimizer = Teleprompter


@dataclass
class Run:
    """Bookkeeping of one ``compile``: iterations (telemetry), candidates, trials, usage."""

    optimizer: str
    seed: int | None = None
    progress: bool = True
    started_s: float = field(default_factory=time.perf_counter)
    finished_s: float | None = None
    meter: Meter = field(default_factory=Meter)
    candidates: list[CandidateRecord] = field(default_factory=list)
    trials: list[TrialRecord] = field(default_factory=list)
    iteration_count: int = 0
    best_score: float | None = None
    _last_s: float = field(default_factory=time.perf_counter)

    def iteration(self, score: float | None, *, converged: bool = False, **metadata: Any) -> None:
        """Record one iteration and emit its telemetry event."""
        now = time.perf_counter()
        self.iteration_count += 1
        if score is not None and (self.best_score is None or score > self.best_score):
            self.best_score = score
        telemetry.emit(
            names.OPTIMIZER_ITERATION,
            {
                "score": score if score is not None else float("nan"),
                "best_score": self.best_score if self.best_score is not None else float("nan"),
                "duration_s": now - self._last_s,
            },
            {"optimizer": self.optimizer, "iteration": self.iteration_count, "converged": converged, **metadata},
        )
        self._last_s = now

    def candidate(
        self,
        score: float | None,
        *,
        program: Any = None,
        config: dict[str, Any] | None = None,
        kind: str = "full",
        objectives: dict[str, float] | None = None,
    ) -> CandidateRecord:
        record = CandidateRecord(
            index=len(self.candidates),
            score=score,
            config=dict(config or {}),
            state=_state(program),
            kind=kind,
            objectives=objectives,
            program=program,
        )
        self.candidates.append(record)
        return record

    def progress_bar(self, total: int, desc: str) -> Any:
        if not self.progress or total <= 0:
            return _NoBar()
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=f"{self.optimizer}: {desc}", dynamic_ncols=True, leave=False)

    def result(self, **extra: Any) -> OptimizationResult:
        end = self.finished_s or time.perf_counter()
        res = OptimizationResult(
            optimizer=self.optimizer,
            best_score=self.best_score,
            candidates=list(self.candidates),
            trials=list(self.trials),
            iterations=self.iteration_count,
            duration_s=end - self.started_s,
            seed=self.seed,
            lm_calls=self.meter.lm_calls,
            paid_calls=self.meter.paid_calls,
            cost_usd=self.meter.cost_usd,
        )
        for key, value in extra.items():
            setattr(res, key, value)
        return res

    def finish(self, program: Module, **extra: Any) -> Module:
        """Mark ``program`` compiled and attach the run's record to it."""
        self.finished_s = time.perf_counter()
        program._compiled = True
        program.optimization_result = self.result(**extra)  # type: ignore[attr-defined]
        return program


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def _state(program: Any) -> dict[str, Any] | None:
    if program is None or not hasattr(program, "dump_state"):
        return None
    try:
        state: dict[str, Any] = program.dump_state()
        return state
    except Exception:  # a state that cannot be dumped is not worth failing a run over
        return None


def _type_name(annotation: Any) -> str:
    if annotation is inspect.Parameter.empty:
        return "Any"
    if isinstance(annotation, str):
        return annotation
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


# -- argument checks shared by the optimizers ------------------------------------------------
def check_program(program: Any, role: str = "student") -> None:
    if not isinstance(program, Module):
        raise OptimizerError(
            f"The {role} must be a dspex.Module (e.g. dspex.Predict('question -> answer')), got {type(program).__name__}."
        )
    if not program.named_predictors():
        raise OptimizerError(f"The {role} has no predictors to optimize; it must hold at least one dspex.Predict.")


def check_dataset(data: Any, name: str, *, min_size: int = 1) -> list[Any]:
    if data is None:
        raise OptimizerError(f"{name} is required: pass a list of dspex.Example with inputs marked (.with_inputs(...)).")
    if not isinstance(data, list | tuple):
        raise OptimizerError(f"{name} must be a list of dspex.Example, got {type(data).__name__}.")
    items = list(data)
    if len(items) < min_size:
        raise OptimizerError(f"{name} needs at least {min_size} example(s), got {len(items)}.")
    for i, ex in enumerate(items):
        if not hasattr(ex, "inputs") or getattr(ex, "_input_keys", None) is None:
            raise OptimizerError(
                f"{name}[{i}] is not a dspex.Example with its inputs marked; build examples as "
                "dspex.Example(question=..., answer=...).with_inputs('question')."
            )
    return items


def check_positive(name: str, value: Any, *, allow_zero: bool = True) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptimizerError(f"{name} must be an integer, got {value!r}.")
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else ">= 1"
        raise OptimizerError(f"{name} must be {bound}, got {value}.")


def rng_for(seed: int | None, *salt: Any) -> random.Random:
    """A Random seeded from ``seed`` and a salt, so every stage of a run has its own stream.

    Built from a digest, not ``hash()``: string hashes differ between processes."""
    if not salt:
        return random.Random(seed)
    digest = hashlib.sha256(repr((seed, *salt)).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))
