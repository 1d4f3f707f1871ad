"""What an offline experiment is: the program, the data, the metric and the arms to compare.

    spec = ExperimentSpec(
        name="hints-vs-bootstrap",
        dataset=DatasetSpec(task="classification", n_train=50, n_test=200, seed=1),
        lm=LMSpec(model="openai/sim-small", api_base=sim.openai_base_url),
        baseline=VariantSpec(name="baseline"),
        variants=[
            VariantSpec(name="bootstrap", optimizer="BootstrapFewShot",
                        optimizer_params={"max_bootstrapped_demos": 4}),
            VariantSpec(name="large", model=LMSpec(model="openai/sim-large", ...)),
            VariantSpec(name="hints", instructions="... focus on the customer's main request."),
        ],
        margin=0.02,
    )

Every arm (the baseline included) is one ``VariantSpec``: an optional optimizer run on the
train split, an optional model (an ``LMSpec`` or the name of a registry model), and optional
instruction / demo changes applied to every predictor of the program. Arms are evaluated on
the SAME test split. Invalid specs raise ``ExperimentError`` naming the field and the fix.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from dspex.errors import DSPexError, ExperimentError
from dspex.primitives.example import Example
from dspex.primitives.module import Module

__all__ = [
    "DatasetSpec",
    "ExperimentSpec",
    "LMSpec",
    "ProgramSpec",
    "VariantSpec",
    "import_object",
    "resolve_optimizer",
]

MetricKind = Literal["auto", "binary", "scored"]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_IMPORT_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "spec"
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


class _Spec(BaseModel):
    """Pydantic model whose validation failures are ``ExperimentError``s."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True, frozen=True)

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise ExperimentError(
                f"Invalid {type(self).__name__}: {_describe(exc)}.", spec=type(self).__name__
            ) from None


def import_object(path: str) -> Any:
    """``"package.module:attribute"`` -> the attribute (dotted attributes allowed)."""
    if not _IMPORT_RE.match(path):
        raise ExperimentError(
            f"{path!r} is not an import path; write it as 'package.module:attribute'."
        )
    module_name, attr = path.split(":", 1)
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ExperimentError(
            f"Cannot import module {module_name!r} (from {path!r}): {exc}."
        ) from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ExperimentError(f"Module {module_name!r} has no attribute {attr!r}.") from None
    return obj


def resolve_optimizer(name: str) -> type:
    """An optimizer class by registry name (e.g. "BootstrapFewShot") or import path."""
    if ":" in name:
        obj = import_object(name)
    else:
        from dspex.optimizers.registry import get_optimizer

        try:
            obj = get_optimizer(name)
        except DSPexError as exc:  # NotFound, listing the registered names
            raise ExperimentError(exc.message) from exc
    cls = obj if isinstance(obj, type) else type(obj)
    if not callable(getattr(cls, "compile", None)):
        raise ExperimentError(
            f"{name!r} is not an optimizer: it has no compile(student, trainset=...)."
        )
    return cls


class LMSpec(_Spec):
    """A language model to call, described so it can be rebuilt in any process (a Ray worker).

    No key is ever part of a spec: ``api_key_env`` names the environment variable holding it.
    Prices (USD per 1M tokens) are registered with the client's price table in the process
    that makes the calls, so ``LMResponse.cost_usd`` is filled in for models it does not know.
    """

    model: str = Field(min_length=3)
    api_base: str | None = None
    api_key_env: str | None = None
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    max_tokens: int | None = Field(default=None, ge=1)
    num_retries: int = Field(default=3, ge=0, le=20)
    input_price_per_1m_usd: float | None = Field(default=None, ge=0.0)
    output_price_per_1m_usd: float | None = Field(default=None, ge=0.0)
    #: any other LM setting (timeout_s, rpm, top_p, ...); never a key
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("model")
    @classmethod
    def _provider_prefix(cls, v: str) -> str:
        if "/" not in v:
            raise ValueError(f"model must be 'provider/name' (e.g. 'openai/sim-small'), got {v!r}")
        return v

    @field_validator("settings")
    @classmethod
    def _no_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if "key" in key.lower() and key != "api_key_env":
                raise ValueError(
                    f"settings must not hold {key!r}: keys never go into a spec; name the "
                    "environment variable in api_key_env instead"
                )
        return v

    @model_validator(mode="after")
    def _prices_together(self) -> LMSpec:
        if (self.input_price_per_1m_usd is None) != (self.output_price_per_1m_usd is None):
            raise ValueError(
                "give both input_price_per_1m_usd and output_price_per_1m_usd, or neither"
            )
        return self

    @property
    def priced(self) -> bool:
        return self.input_price_per_1m_usd is not None

    @classmethod
    def from_sim(cls, sim: Any, model: str, **fields: Any) -> LMSpec:
        """A simulated model of a running ``SimServer`` / ``SimProcess``, with its prices."""
        spec = sim.config.model(model)
        return cls(
            model=f"openai/{model}",
            api_base=sim.openai_base_url,
            input_price_per_1m_usd=spec.price.input_per_1m_usd,
            output_price_per_1m_usd=spec.price.output_per_1m_usd,
            **fields,
        )

    def build(self, *, seed: int | None = None) -> Any:
        """A ``dspex.clients.LM`` for this spec. With ``seed``, every request carries it, and
        the cache key also holds it as DSPy's ``rollout_id`` (for providers that drop seeds)."""
        from dspex.clients import LM, register_price

        if self.input_price_per_1m_usd is not None and self.output_price_per_1m_usd is not None:
            register_price(self.model, self.input_price_per_1m_usd, self.output_price_per_1m_usd)
        kwargs: dict[str, Any] = dict(self.settings)
        if seed is not None:
            kwargs["seed"] = int(seed)
            kwargs.setdefault("rollout_id", f"seed-{int(seed)}")
        return LM(
            self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            num_retries=self.num_retries,
            api_base=self.api_base,
            api_key_env=self.api_key_env,
            **kwargs,
        )


class ProgramSpec(_Spec):
    """The program under test: a signature and module type, a factory, or a Module instance.

    ``signature="text -> label", module="Predict"``; ``factory="my_pkg.programs:build_rag"``
    (a callable returning a Module, or a Module attribute); or ``instance=<Module>``.
    """

    signature: str | None = None
    module: Literal["Predict", "ChainOfThought"] = "Predict"
    factory: str | None = None
    instance: Module | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> ProgramSpec:
        given = [n for n in ("signature", "factory", "instance") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of signature (e.g. 'question -> answer'), factory "
                f"('package.module:function') or instance (a dspex.Module); got {given or 'none'}"
            )
        if self.factory is not None and not _IMPORT_RE.match(self.factory):
            raise ValueError(f"factory must be 'package.module:function', got {self.factory!r}")
        return self

    def build(self) -> Module:
        """A fresh program (a deep copy for ``instance``, so arms never share state)."""
        if self.instance is not None:
            program: Any = self.instance.deepcopy()
        elif self.factory is not None:
            obj = import_object(self.factory)
            if isinstance(obj, Module):
                program = obj.deepcopy()
            else:
                try:
                    program = obj()
                except Exception as exc:
                    raise ExperimentError(
                        f"The program factory {self.factory} raised {type(exc).__name__}: {exc}"
                    ) from exc
        else:
            import dspex

            program = getattr(dspex, self.module)(self.signature)
        if not isinstance(program, Module) or not program.named_predictors():
            raise ExperimentError(
                f"The program must be a dspex.Module with at least one predictor; {self.describe()} "
                f"gave {type(program).__name__}."
            )
        return program

    def describe(self) -> str:
        if self.signature is not None:
            return f"{self.module}({self.signature!r})"
        if self.factory is not None:
            return f"factory {self.factory}"
        return f"instance of {type(self.instance).__name__}"

    def to_dict(self) -> dict[str, Any]:
        if self.instance is not None:
            return {"instance": type(self.instance).__name__, "state": _safe_state(self.instance)}
        return self.model_dump(exclude={"instance"}, exclude_none=True)


def _safe_state(program: Module) -> Any:
    try:
        state = program.dump_state()
    except Exception:  # a program whose state cannot be dumped is still runnable
        return None
    return _strip_lm(state)


def _strip_lm(value: Any) -> Any:
    """A program state without its LM settings (they are the arm's model, recorded apart)."""
    if isinstance(value, dict):
        return {k: _strip_lm(v) for k, v in value.items() if k != "lm"}
    if isinstance(value, list):
        return [_strip_lm(v) for v in value]
    return value


class DatasetSpec(_Spec):
    """The data: a simulated task (``task`` + ``seed``) or your own ``examples``, and the split.

    Sizes: ``n_train`` and ``n_test``, or ``n`` split by ``test_fraction``. The split is
    seeded by the experiment's seed and stratified by the label when it is discrete
    (``stratify="auto"``: a label with at most max(2, n/5) distinct values).
    """

    task: str | None = None
    seed: int = Field(default=0, ge=0)
    examples: list[Example] | None = None
    n: int | None = Field(default=None, ge=2)
    n_train: int | None = Field(default=None, ge=0)
    n_test: int | None = Field(default=None, ge=2)
    test_fraction: float = Field(default=0.5, gt=0.0, lt=1.0)
    #: the label field to stratify on (default: the task's answer field, or the only label)
    label_field: str | None = None
    stratify: bool | Literal["auto"] = "auto"

    @model_validator(mode="after")
    def _source(self) -> DatasetSpec:
        if (self.task is None) == (self.examples is None):
            raise ValueError("give exactly one of task (a simulated task name) or examples")
        if self.task is not None:
            from dspex.sim.tasks import list_tasks

            if self.task not in list_tasks():
                raise ValueError(f"no simulated task {self.task!r}; the tasks are {list_tasks()}")
            if self.n is None and (self.n_train is None or self.n_test is None):
                raise ValueError("a task dataset needs n, or both n_train and n_test")
        if self.examples is not None:
            if len(self.examples) < 2:
                raise ValueError("examples must hold at least 2 examples")
            for i, ex in enumerate(self.examples):
                if not isinstance(ex, Example):
                    raise ValueError(f"examples[{i}] is a {type(ex).__name__}, not a dspex.Example")
                if ex._input_keys is None:
                    raise ValueError(f"examples[{i}] has no inputs marked; call .with_inputs(...)")
        total = self.total()
        if (
            self.n_train is not None
            and self.n_test is not None
            and self.n_train + self.n_test > total
        ):
            raise ValueError(
                f"n_train + n_test = {self.n_train + self.n_test} exceeds the {total} examples available"
            )
        if self.test_size() < 2 or self.test_size() > total:
            raise ValueError(
                f"the test split would hold {self.test_size()} of {total} examples; it needs 2 or more"
            )
        return self

    def total(self) -> int:
        if self.examples is not None:
            return len(self.examples) if self.n is None else min(self.n, len(self.examples))
        if self.n is not None:
            return self.n
        return int(self.n_train or 0) + int(self.n_test or 0)

    def test_size(self) -> int:
        if self.n_test is not None:
            return self.n_test
        total = self.total()
        if self.n_train is not None:
            return total - self.n_train
        return max(1, min(total - 1, round(total * self.test_fraction)))

    def train_size(self) -> int:
        if self.n_train is not None:
            return self.n_train
        return self.total() - self.test_size()

    def load(self) -> list[Example]:
        if self.examples is not None:
            return list(self.examples[: self.total()])
        from dspex.sim.tasks import load_task

        assert self.task is not None
        return load_task(self.task, self.total(), seed=self.seed, split="train")

    def label(self) -> str | None:
        if self.label_field is not None:
            return self.label_field
        if self.task is not None:
            from dspex.sim.tasks import get_task

            return get_task(self.task).answer_field
        assert self.examples is not None
        first = self.examples[0]
        labels = [k for k in first.labels().keys() if k not in _SIM_LABELS]
        return labels[0] if len(labels) == 1 else None

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(exclude={"examples"}, exclude_none=True)
        if self.examples is not None:
            data["examples"] = [
                {"data": ex.toDict(), "inputs": sorted(ex._input_keys or ())}
                for ex in self.examples
            ]
        return data


#: labels the simulator attaches to its examples; never the thing to stratify on
_SIM_LABELS = frozenset({"cluster", "difficulty", "distractors", "sim_ref"})


class VariantSpec(_Spec):
    """One arm: what differs from the plain program. All fields but ``name`` are optional.

    ``model``: an ``LMSpec`` or the name of a model in the registry (default: the
    experiment's ``lm``). ``instructions`` replace every predictor's instructions; ``demos``
    become every predictor's demos (not with an optimizer, which chooses its own).
    """

    name: str
    description: str = ""
    optimizer: str | None = None
    optimizer_params: dict[str, Any] = Field(default_factory=dict)
    model: LMSpec | str | None = None
    instructions: str | None = None
    demos: list[Example] | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(
                f"arm name {v!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("optimizer")
    @classmethod
    def _known_optimizer(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                resolve_optimizer(v)
            except ExperimentError as exc:
                raise ValueError(exc.message) from None
        return v

    @field_validator("instructions")
    @classmethod
    def _instructions(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError(
                "instructions must not be blank; leave them out to keep the program's own"
            )
        return v

    @model_validator(mode="after")
    def _consistent(self) -> VariantSpec:
        if self.optimizer_params and self.optimizer is None:
            raise ValueError("optimizer_params given without an optimizer")
        if self.demos is not None and self.optimizer is not None:
            raise ValueError(
                "give demos or an optimizer, not both: the optimizer chooses the demos itself"
            )
        if isinstance(self.model, str) and not self.model.strip():
            raise ValueError("model must be a registry model name or an LMSpec")
        return self

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(exclude={"demos", "model"}, exclude_none=True)
        data["optimizer_params"] = {k: _jsonable(v) for k, v in self.optimizer_params.items()}
        if isinstance(self.model, LMSpec):
            data["model"] = self.model.model_dump(exclude_none=True)
        elif self.model is not None:
            data["model"] = {"registry": self.model}
        if self.demos is not None:
            data["demos"] = [d.toDict() for d in self.demos]
        return data


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)


class ExperimentSpec(_Spec):
    """A whole offline experiment. See the module docstring for an example.

    Statistics: ``alpha`` family-wise across the variants (``correction`` "holm", or "bh" /
    "none"); a variant wins only when significant AND better by at least ``margin`` (pass-rate
    points for pass/fail metrics). ``target_effect``: the difference the power report plans
    for (default: the margin when > 0). ``repeats`` > 1 samples every test example that many
    times (needs temperature > 0) and compares per-example mean scores.
    """

    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    hypothesis: str = ""
    program: ProgramSpec | None = None
    dataset: DatasetSpec
    metric: Callable[..., Any] | str | None = None
    metric_kind: MetricKind = "auto"
    lm: LMSpec | str | None = None
    baseline: VariantSpec = Field(default_factory=lambda: VariantSpec(name="baseline"))
    variants: list[VariantSpec] = Field(min_length=1)
    repeats: int = Field(default=1, ge=1, le=100)
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    correction: Literal["holm", "bh", "none"] = "holm"
    margin: float = Field(default=0.0, ge=0.0)
    target_effect: float | None = Field(default=None, gt=0.0)
    power: float = Field(default=0.8, gt=0.0, lt=1.0)
    n_resamples: int = Field(default=9999, ge=99, le=1_000_000)
    seed: int = Field(default=0, ge=0)
    #: (program, example) pairs in flight per arm
    num_threads: int = Field(default=16, ge=1, le=1024)
    failure_score: float = 0.0

    @field_validator("program", mode="before")
    @classmethod
    def _coerce_program(cls, v: Any) -> Any:
        if isinstance(v, Module):
            return ProgramSpec(instance=v)
        if isinstance(v, str):
            return (
                ProgramSpec(factory=v) if ":" in v and "->" not in v else ProgramSpec(signature=v)
            )
        return v

    @field_validator("metric")
    @classmethod
    def _metric(cls, v: Any) -> Any:
        if isinstance(v, str):
            try:
                obj = import_object(v)
            except ExperimentError as exc:
                raise ValueError(exc.message) from None
            if not callable(obj):
                raise ValueError(f"metric {v!r} is not callable")
        return v

    @model_validator(mode="after")
    def _whole(self) -> ExperimentSpec:
        names = [self.baseline.name, *(v.name for v in self.variants)]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"arm names must be unique (the baseline included); repeated: {dupes}")
        if self.program is None and self.dataset.task is None:
            raise ValueError("program is required unless the dataset is a simulated task")
        if self.metric is None and self.dataset.task is None:
            raise ValueError("metric is required unless the dataset is a simulated task")
        for arm in self.arms():
            if arm.model is None and self.lm is None:
                raise ValueError(
                    f"arm {arm.name!r} has no model; set the experiment's lm or the arm's model"
                )
            if self.repeats > 1 and isinstance(self.model_of(arm), LMSpec):
                temp = self.model_of(arm).temperature  # type: ignore[union-attr]
                if temp is None or temp == 0:
                    raise ValueError(
                        f"repeats={self.repeats} but arm {arm.name!r} samples at temperature "
                        f"{temp or 0}: every repeat would give the same answer; set temperature > 0 "
                        "or repeats=1"
                    )
        if any(a.optimizer for a in self.arms()) and self.dataset.train_size() < 1:
            raise ValueError(
                "an arm runs an optimizer but the train split is empty; give n_train >= 1"
            )
        effect = self.planned_effect()
        if effect is not None and self.metric_kind == "binary" and effect >= 1:
            raise ValueError(
                "margin and target_effect are pass-rate differences for a binary metric: use < 1"
            )
        if not math.isfinite(self.failure_score):
            raise ValueError("failure_score must be a finite number")
        return self

    # -- reading -------------------------------------------------------------------------------
    def arms(self) -> list[VariantSpec]:
        return [self.baseline, *self.variants]

    def model_of(self, arm: VariantSpec) -> LMSpec | str:
        model = arm.model if arm.model is not None else self.lm
        assert model is not None  # checked by the validator
        return model

    def planned_effect(self) -> float | None:
        if self.target_effect is not None:
            return self.target_effect
        return self.margin if self.margin > 0 else None

    def program_spec(self) -> ProgramSpec:
        if self.program is not None:
            return self.program
        from dspex.sim.tasks import get_task

        assert self.dataset.task is not None
        return ProgramSpec(signature=get_task(self.dataset.task).signature)

    def metric_fn(self) -> Callable[..., Any]:
        if self.metric is None:
            from dspex.sim.tasks import get_task

            assert self.dataset.task is not None
            return get_task(self.dataset.task).metric
        if isinstance(self.metric, str):
            fn: Callable[..., Any] = import_object(self.metric)
            return fn
        return self.metric

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON data (for the store and the report); callables by name."""
        metric = self.metric
        if metric is None:
            metric_name = f"task:{self.dataset.task}"
        elif isinstance(metric, str):
            metric_name = metric
        else:
            metric_name = getattr(metric, "__qualname__", None) or repr(metric)
        lm: Any = None
        if isinstance(self.lm, LMSpec):
            lm = self.lm.model_dump(exclude_none=True)
        elif self.lm is not None:
            lm = {"registry": self.lm}
        return {
            "name": self.name,
            "description": self.description,
            "hypothesis": self.hypothesis,
            "program": self.program_spec().to_dict(),
            "dataset": self.dataset.to_dict(),
            "metric": metric_name,
            "metric_kind": self.metric_kind,
            "lm": lm,
            "baseline": self.baseline.to_dict(),
            "variants": [v.to_dict() for v in self.variants],
            "repeats": self.repeats,
            "alpha": self.alpha,
            "correction": self.correction,
            "margin": self.margin,
            "target_effect": self.target_effect,
            "power": self.power,
            "n_resamples": self.n_resamples,
            "seed": self.seed,
            "num_threads": self.num_threads,
            "failure_score": self.failure_score,
        }
