"""The simulated server's configuration: models (skill, latency, prices, limits) and faults.

Loadable from YAML or JSON (``SimConfig.load(path)``); ``SimConfig.default()`` is a built-in
set of three models on a real accuracy / latency / cost trade-off (README.md, "Models").
Faults can also be changed while the server runs (``POST /admin/faults``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from dspex.errors import ConfigurationError

__all__ = ["FaultSpec", "LatencySpec", "ModelSpec", "PriceSpec", "SimConfig"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LatencySpec(_Strict):
    """latency = base_ms + per_output_token_ms * output_tokens + jitter (seeded, in [0, jitter_ms])."""

    base_ms: float = Field(default=0.0, ge=0)
    per_output_token_ms: float = Field(default=0.0, ge=0)
    jitter_ms: float = Field(default=0.0, ge=0)


class PriceSpec(_Strict):
    input_per_1m_usd: float = Field(default=0.0, ge=0)
    output_per_1m_usd: float = Field(default=0.0, ge=0)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (
            prompt_tokens * self.input_per_1m_usd + completion_tokens * self.output_per_1m_usd
        ) / 1e6


class FaultSpec(_Strict):
    """What goes wrong, per model. Every field can be changed at runtime.

    Fault draws come from a sequential RNG seeded by the config seed (not from the request
    hash), so a retry of a failed request can succeed, and a rate of 0.2 fails one request in
    five on average whatever the prompts are.
    """

    #: fraction of requests answered with ``error_status`` (a 5xx)
    error_rate: float = Field(default=0.0, ge=0, le=1)
    error_status: int = Field(default=500, ge=500, le=599)
    #: when set, simulated 5xx replies carry ``Retry-After`` (as a 503 from a gateway may)
    error_retry_after_s: float | None = Field(default=None, gt=0)
    #: requests per rolling minute; above it the server answers 429 with Retry-After
    rpm_limit: int | None = Field(default=None, ge=1)
    #: fraction of requests that hang for ``hang_s`` (then 504), so clients time out
    hang_rate: float = Field(default=0.0, ge=0, le=1)
    hang_s: float = Field(default=30.0, ge=0)
    #: every request answered 503 while on
    outage: bool = False
    #: fraction of replies whose content is malformed (broken markers, truncated JSON)
    malformed_rate: float = Field(default=0.0, ge=0, le=1)
    #: added to every request's latency (a slow model without changing its spec)
    extra_latency_ms: float = Field(default=0.0, ge=0)


class ModelSpec(_Strict):
    """One simulated model.

    ``skill`` in [0, 1] enters the answer model (README.md); ``task_skill`` overrides it per
    task name, so a model can be strong on one task and weak on another.
    """

    name: str = Field(min_length=1)
    skill: float = Field(ge=0, le=1)
    task_skill: dict[str, float] = Field(default_factory=dict)
    latency: LatencySpec = Field(default_factory=LatencySpec)
    price: PriceSpec = Field(default_factory=PriceSpec)
    context_window: int = Field(default=128_000, ge=64)
    max_output_tokens: int = Field(default=8192, ge=1)
    faults: FaultSpec = Field(default_factory=FaultSpec)
    #: the "owned_by" shown in GET /v1/models
    owned_by: str = "dspex-sim"

    @field_validator("task_skill")
    @classmethod
    def _skills_in_range(cls, v: dict[str, float]) -> dict[str, float]:
        for task, s in v.items():
            if not 0.0 <= s <= 1.0:
                raise ValueError(f"task_skill[{task!r}] = {s} is outside [0, 1]")
        return v

    def skill_for(self, task: str | None) -> float:
        if task is not None and task in self.task_skill:
            return self.task_skill[task]
        return self.skill


class SimConfig(_Strict):
    """The whole server: its models, seed, and whether an API key is required."""

    models: list[ModelSpec] = Field(min_length=1)
    #: seeds the answer draws (with the request) and the fault RNG
    seed: int = 0
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    #: when set, every /v1 request needs one of these keys (Bearer or x-api-key), else 401
    api_keys: list[str] | None = None
    #: parsed prompts kept by hash, so repeated prompts skip parsing
    prompt_cache_size: int = Field(default=4096, ge=0)

    @model_validator(mode="after")
    def _unique_names(self) -> SimConfig:
        names = [m.name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"model names must be unique; repeated: {dupes}")
        return self

    def __repr__(self) -> str:  # api keys never appear in a repr
        keys = "None" if self.api_keys is None else f"[{len(self.api_keys)} redacted]"
        return (
            f"SimConfig(models={[m.name for m in self.models]}, seed={self.seed}, api_keys={keys})"
        )

    __str__ = __repr__

    def model(self, name: str) -> ModelSpec:
        for m in self.models:
            if m.name == name:
                return m
        raise ConfigurationError(
            f"The simulator has no model {name!r}; its models are {[m.name for m in self.models]}."
        )

    def public_dict(self) -> dict[str, Any]:
        """The config as JSON data without secrets (for GET /admin/config and logs)."""
        data = self.model_dump(mode="json")
        if data.get("api_keys") is not None:
            data["api_keys"] = f"<{len(data['api_keys'])} redacted>"
        return data

    def with_models(self, *models: ModelSpec) -> SimConfig:
        """A copy with ``models`` added (replacing models of the same name)."""
        names = {m.name for m in models}
        kept = [m for m in self.models if m.name not in names]
        return self.model_copy(update={"models": [*kept, *models]})

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> SimConfig:
        """Read a YAML (.yaml/.yml) or JSON file. Errors name the file and the bad field."""
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise ConfigurationError(f"Cannot read the simulator config {p}: {exc}.") from exc
        data: Any
        try:
            if p.suffix.lower() in {".yaml", ".yml"}:
                import yaml

                data = yaml.safe_load(text)
            else:
                data = json.loads(text)
        except Exception as exc:
            raise ConfigurationError(
                f"The simulator config {p} is not valid {'YAML' if p.suffix in {'.yaml', '.yml'} else 'JSON'}: {exc}"
            ) from exc
        return cls.from_data(data, source=str(p))

    @classmethod
    def from_data(cls, data: Any, *, source: str = "<data>") -> SimConfig:
        from pydantic import ValidationError as PydanticValidationError

        if not isinstance(data, dict):
            raise ConfigurationError(
                f"The simulator config {source} must be a mapping with a 'models' list."
            )
        try:
            return cls.model_validate(data)
        except PydanticValidationError as exc:
            raise ConfigurationError(f"The simulator config {source} is invalid: {exc}") from exc

    def dump_yaml(self) -> str:
        import yaml

        return str(yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False))

    # -- built-ins ---------------------------------------------------------------------------
    @classmethod
    def default(cls) -> SimConfig:
        """Three models on a Pareto front: each step up is more accurate, slower and dearer."""
        return cls(models=list(DEFAULT_MODELS))

    @classmethod
    def for_tests(cls) -> SimConfig:
        """The default models plus instant twins (``<name>-fast``: same skill and prices, no
        latency), for tests that must not wait."""
        fast = [
            m.model_copy(update={"name": f"{m.name}-fast", "latency": LatencySpec()})
            for m in DEFAULT_MODELS
        ]
        return cls(models=[*DEFAULT_MODELS, *fast])


DEFAULT_MODELS: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="sim-small",
        skill=0.35,
        latency=LatencySpec(base_ms=120, per_output_token_ms=4, jitter_ms=40),
        price=PriceSpec(input_per_1m_usd=0.15, output_per_1m_usd=0.60),
        context_window=16_384,
    ),
    ModelSpec(
        name="sim-medium",
        skill=0.60,
        latency=LatencySpec(base_ms=250, per_output_token_ms=8, jitter_ms=80),
        price=PriceSpec(input_per_1m_usd=1.00, output_per_1m_usd=4.00),
        context_window=65_536,
    ),
    ModelSpec(
        name="sim-large",
        skill=0.85,
        latency=LatencySpec(base_ms=500, per_output_token_ms=15, jitter_ms=150),
        price=PriceSpec(input_per_1m_usd=5.00, output_per_1m_usd=15.00),
        context_window=200_000,
    ),
)
