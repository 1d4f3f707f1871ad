"""``ProviderClient``: one async actor per provider endpoint, and ``RemoteLM``, its proxy.

The seed runs one HTTP client GenServer per provider (Stage 2 §3.1) so its pool, rate
limiter, circuit breaker and retries hold for the whole node. Here the ``ProviderClient``
actor owns one ``dspex.LM`` with its own ``Endpoint`` (limiter + breaker) and connection
pool; every predictor on the cluster that talks to that endpoint calls it, so ``rpm`` /
``tpm`` and the breaker are cluster-wide however many predictors there are. The LM's
response cache lives in the actor too, so identical calls from different workers are
answered once.

It is an async actor with a high ``max_concurrency`` (1000): calls are I/O-bound awaits on
one event loop, so it is not the bottleneck for LM calls of 100 ms and more; see
``benchmarks/actors.py`` for the measured overhead.

``RemoteLM`` is a ``BaseLM``: a program uses it unchanged (``dspex.configure(lm=RemoteLM(
"openai/sim-small", api_base=...))`` or ``predictor.lm = RemoteLM(...)``). On first use it
gets-or-creates the endpoint's named actor; ``aforward`` sends the messages and settings to
it and returns the ``LMResponse`` (history, usage and telemetry are kept on the caller's
side by ``BaseLM``).

Secrets: ``RemoteLM`` takes no ``api_key``: Ray stores an actor's constructor arguments in
its control store. The actor reads the key from the environment variable named by
``api_key_env`` (or the provider's default), which must be set for the Ray workers.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass, field
from typing import Any

from dspex.clients.base_lm import BaseLM, LMResponse
from dspex.clients.resilience import BreakerConfig, Endpoint, RetryPolicy
from dspex.clients.transport import PoolLimits
from dspex.errors import ConfigurationError, ProviderTimeout, ProviderUnavailable

from . import _ray

__all__ = ["ProviderClient", "ProviderConfig", "RemoteLM"]


@dataclass(frozen=True)
class ProviderConfig:
    """One endpoint's client settings (the actor's constructor argument; holds no secret)."""

    model: str
    api_base: str | None = None
    api_key_env: str | None = None
    rpm: float | None = None
    tpm: float | None = None
    max_wait_s: float = 60.0
    breaker: BreakerConfig | None = None
    num_retries: int = 3
    retry: RetryPolicy | None = None
    timeout_s: float | None = None
    cache: bool = True
    capabilities: dict[str, bool] | None = None
    pool_limits: PoolLimits | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.breaker, dict):
            object.__setattr__(self, "breaker", BreakerConfig(**self.breaker))
        if "api_key" in self.extra:
            raise ConfigurationError(_NO_KEY)

    @property
    def endpoint_id(self) -> str:
        from dspex.clients.providers import resolve_model

        return resolve_model(self.model, api_base=self.api_base, api_key_env=self.api_key_env).endpoint_id

    @property
    def actor_name(self) -> str:
        """The named actor for this endpoint: every worker derives the same name."""
        digest = hashlib.sha256(self.endpoint_id.encode()).hexdigest()[:16]
        return f"dspex.provider.{digest}"

    def build_lm(self) -> Any:
        from dspex.clients.lm import LM

        endpoint = Endpoint(
            self.endpoint_id, rpm=self.rpm, tpm=self.tpm, breaker=self.breaker, max_wait_s=self.max_wait_s
        )
        return LM(
            self.model,
            cache=self.cache,
            num_retries=self.num_retries,
            api_base=self.api_base,
            api_key_env=self.api_key_env,
            timeout_s=self.timeout_s,
            retry=self.retry,
            capabilities=self.capabilities,
            pool_limits=self.pool_limits,
            endpoint=endpoint,
            **self.extra,
        )


_NO_KEY = (
    "RemoteLM / ProviderConfig take no api_key: Ray stores actor arguments in its control store. "
    "Set the key in an environment variable the Ray workers see and pass api_key_env='NAME'."
)


class ProviderClient:
    """The actor body (see the module docstring). Made remote in ``factory.py``."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.lm = config.build_lm()
        self.endpoint: Endpoint = self.lm.endpoint
        self.calls = 0
        self.errors = 0
        self.in_flight = 0
        self.peak_in_flight = 0

    async def call(self, messages: list[dict[str, Any]], kwargs: dict[str, Any]) -> LMResponse:
        """One LM call through the endpoint's breaker, limiter and retries."""
        self.calls += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            response: LMResponse = await self.lm.aforward(messages=messages, **kwargs)
            return response
        except Exception:
            self.errors += 1
            raise
        finally:
            self.in_flight -= 1

    async def state(self) -> dict[str, Any]:
        breaker = self.endpoint.breaker
        limiter = self.endpoint.limiter
        return {
            "endpoint": self.endpoint.id,
            "model": self.config.model,
            "breaker": breaker.state.value,
            "consecutive_failures": breaker.failures,
            "rpm": limiter.rpm,
            "tpm": limiter.tpm,
            "calls": self.calls,
            "errors": self.errors,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
        }

    async def configure(
        self, *, rpm: float | None = None, tpm: float | None = None, breaker: BreakerConfig | dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Change the endpoint's limits while it runs (the limits hold for every caller)."""
        if rpm is not None or tpm is not None:
            self.endpoint.limiter.configure(rpm if rpm is not None else self.endpoint.limiter.rpm,
                                            tpm if tpm is not None else self.endpoint.limiter.tpm)
        if breaker is not None:
            self.endpoint.breaker.config = BreakerConfig(**breaker) if isinstance(breaker, dict) else breaker
        return await self.state()

    async def ready(self) -> bool:
        return True


class RemoteLM(BaseLM):
    """A ``BaseLM`` whose calls run in the endpoint's ``ProviderClient`` actor.

    Takes ``dspex.LM``'s arguments (but no ``api_key``, see the module docstring), plus
    ``call_timeout_s`` (a guard on the whole remote call; None: rely on the LM's timeouts),
    ``detached`` (the actor outlives the job that created it) and ``actor_options``.
    """

    def __init__(
        self,
        model: str,
        model_type: str = "chat",
        temperature: float | None = None,
        max_tokens: int | None = None,
        cache: bool = True,
        num_retries: int = 3,
        *,
        api_base: str | None = None,
        api_key_env: str | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_wait_s: float = 60.0,
        breaker: BreakerConfig | dict[str, Any] | None = None,
        retry: RetryPolicy | None = None,
        timeout_s: float | None = None,
        capabilities: dict[str, bool] | None = None,
        pool_limits: PoolLimits | None = None,
        call_timeout_s: float | None = None,
        detached: bool = False,
        actor_options: dict[str, Any] | None = None,
        api_key: str | None = None,
        **kwargs: Any,
    ) -> None:
        if api_key is not None:
            raise ConfigurationError(_NO_KEY)
        super().__init__(model, model_type, temperature=temperature, max_tokens=max_tokens, cache=cache, **kwargs)
        self.config = ProviderConfig(
            model=model,
            api_base=api_base,
            api_key_env=api_key_env,
            rpm=rpm,
            tpm=tpm,
            max_wait_s=max_wait_s,
            breaker=BreakerConfig(**breaker) if isinstance(breaker, dict) else breaker,
            num_retries=num_retries,
            retry=retry,
            timeout_s=timeout_s,
            cache=cache,
            capabilities=capabilities,
            pool_limits=pool_limits,
        )
        self.call_timeout_s = call_timeout_s
        self.detached = detached
        self.actor_options = dict(actor_options or {})
        # The same request shape as the actor's LM (provider name, capabilities), checked now
        # so a bad model or URL fails where the program is configured.
        shape = self.config.build_lm()
        self.provider = shape.provider
        self.capabilities = shape.capabilities
        self._shape = shape
        self._handle: Any = None
        if _ray.ray_ready():
            # Create the actor here (usually the driver), so it is owned by this long-lived
            # process rather than by whichever predictor calls first (a non-detached actor
            # dies with its owner).
            self.handle()

    # -- the actor -----------------------------------------------------------------------------
    def handle(self) -> Any:
        """The endpoint's ``ProviderClient`` actor (created on first use)."""
        if self._handle is None:
            from .factory import get_provider_client

            self._handle = get_provider_client(self.config, detached=self.detached, options=self.actor_options)
        return self._handle

    def supports(self, feature: str) -> bool:
        return bool(self._shape.supports(feature))

    async def state(self) -> dict[str, Any]:
        """The actor's breaker, limiter and counters."""
        result: dict[str, Any] = await self.handle().state.remote()
        return result

    # -- calls ---------------------------------------------------------------------------------
    def _request(self, prompt: str | None, messages: list[dict[str, Any]] | None, kwargs: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        messages = self._messages(prompt, messages)
        kwargs = dict(kwargs)
        kwargs.setdefault("cache", self.cache)
        kwargs.pop("api_key", None)
        return messages, kwargs

    async def aforward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> LMResponse:
        messages, kwargs = self._request(prompt, messages, kwargs)
        for attempt in range(2):
            try:
                ref = self.handle().call.remote(messages, kwargs)
                if self.call_timeout_s is None:
                    response: LMResponse = await ref
                else:
                    response = await asyncio.wait_for(_awaitable(ref), timeout=self.call_timeout_s)
                return response
            except TimeoutError:
                raise self._timeout() from None
            except Exception as exc:
                if _ray.actor_died(exc) and attempt == 0:
                    self._handle = None  # the actor restarts (or is re-created): look it up again
                    continue
                raise self._map(exc) from exc
        raise AssertionError("unreachable")

    def forward(
        self, prompt: str | None = None, messages: list[dict[str, Any]] | None = None, **kwargs: Any
    ) -> LMResponse:
        import ray
        from ray.exceptions import GetTimeoutError

        messages, kwargs = self._request(prompt, messages, kwargs)
        for attempt in range(2):
            try:
                ref = self.handle().call.remote(messages, kwargs)
                response: LMResponse = ray.get(ref, timeout=self.call_timeout_s)
                return response
            except GetTimeoutError:
                raise self._timeout() from None
            except Exception as exc:
                if _ray.actor_died(exc) and attempt == 0:
                    self._handle = None
                    continue
                raise self._map(exc) from exc
        raise AssertionError("unreachable")

    def _timeout(self) -> ProviderTimeout:
        return ProviderTimeout(
            f"The call to {self.config.model} through its ProviderClient actor took longer than "
            f"call_timeout_s={self.call_timeout_s}.",
            provider=self.provider,
            model=self.model,
        )

    def _map(self, exc: BaseException) -> BaseException:
        cause = _ray.unwrap(exc)
        if cause is not exc:
            return cause
        if _ray.actor_died(exc):
            return ProviderUnavailable(
                f"The ProviderClient actor for {self.config.model} ({self.config.actor_name}) died and did not "
                f"come back: {_ray.describe(exc)}.",
                hint="Check the Ray cluster (ray status, the actor's logs); the call was not answered.",
                provider=self.provider,
                model=self.model,
            )
        return exc

    # -- copies and saved state ------------------------------------------------------------------
    def dump_state(self) -> dict[str, Any]:
        """As ``LM.dump_state``: loading it builds a local ``dspex.LM`` with the same settings."""
        state = super().dump_state()
        state["num_retries"] = self.config.num_retries
        for name in ("api_base", "api_key_env", "rpm", "tpm", "timeout_s"):
            value = getattr(self.config, name)
            if value is not None:
                state[name] = value
        return state

    def __deepcopy__(self, memo: dict[int, Any]) -> RemoteLM:
        return self  # an LM is shared when a program is copied (as DSPy's are)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_handle"] = None  # looked up again by name in the receiving process
        state["history"] = type(self.history)(maxlen=self.history.maxlen)
        return state

    def __repr__(self) -> str:
        base = f", api_base={self.config.api_base!r}" if self.config.api_base else ""
        return f"RemoteLM(model={self.model!r}{base})"


async def _awaitable(ref: Any) -> Any:
    return await ref
