"""``Model``: one registered language model, its status machine, health and cost estimate.

Status (Stage 4 §1.1)::

    testing --approve--> available
    testing, available --deprecate--> deprecated
    testing, available --error--> error
    deprecated, error --retest--> testing

Health (the seed's ``health_status``): ``unknown`` until the model was observed (a health
probe, or a real call through the router); ``stale`` when that observation is older than
``stale_after_s`` (two health-check intervals); else by success rate: above 0.95 ``healthy``,
above 0.8 ``degraded``, otherwise ``unhealthy``.

Secrets: a model holds ``secret_ref``, the *name* of the environment variable with its API
key, never the key; values that look like keys are refused (``check_secret_ref``).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from dspex.errors import ConfigurationError, InvalidTransition, ValidationError

__all__ = [
    "DEFAULT_OUTPUT_TOKENS",
    "DEFAULT_STALE_AFTER_S",
    "PROVIDERS",
    "CostEstimate",
    "HealthStatus",
    "Model",
    "ModelStatus",
    "allowed_events",
    "check_secret_ref",
    "estimate_tokens",
    "next_status",
]

#: providers a model may name (the seed's five, plus the LM client's other prefixes)
PROVIDERS = frozenset(
    {"openai", "anthropic", "cohere", "huggingface", "local", "ollama", "vllm", "llamacpp", "openai_compatible"}
)
#: two health-check intervals of the default 300 s
DEFAULT_STALE_AFTER_S = 600.0
#: the reply length assumed by cost estimates when the caller gives none
DEFAULT_OUTPUT_TOKENS = 256
#: weight of the newest observation in the moving averages (the seed's 0.9 / 0.1)
EMA_ALPHA = 0.1


class ModelStatus(StrEnum):
    TESTING = "testing"
    AVAILABLE = "available"
    DEPRECATED = "deprecated"
    ERROR = "error"


class HealthStatus(StrEnum):
    UNKNOWN = "unknown"
    STALE = "stale"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


_TRANSITIONS: dict[str, tuple[frozenset[ModelStatus], ModelStatus]] = {
    "approve": (frozenset({ModelStatus.TESTING}), ModelStatus.AVAILABLE),
    "deprecate": (frozenset({ModelStatus.TESTING, ModelStatus.AVAILABLE}), ModelStatus.DEPRECATED),
    "error": (frozenset({ModelStatus.TESTING, ModelStatus.AVAILABLE}), ModelStatus.ERROR),
    "retest": (frozenset({ModelStatus.DEPRECATED, ModelStatus.ERROR}), ModelStatus.TESTING),
}


def allowed_events(status: ModelStatus | str) -> tuple[str, ...]:
    st = ModelStatus(status)
    return tuple(sorted(ev for ev, (sources, _) in _TRANSITIONS.items() if st in sources))


def next_status(status: ModelStatus | str, event: str) -> ModelStatus:
    """The status after ``event``, or ``InvalidTransition`` naming the allowed events."""
    st = ModelStatus(status)
    rule = _TRANSITIONS.get(event)
    if rule is None or st not in rule[0]:
        raise InvalidTransition.of("model", st.value, event, allowed_events(st))
    return rule[1]


def estimate_tokens(chars: int) -> int:
    """About four characters per token (the seed's and OpenAI's rule of thumb)."""
    return math.ceil(chars / 4) if chars > 0 else 0


@dataclass(frozen=True, slots=True)
class CostEstimate:
    input_tokens: int
    output_tokens: int
    cost_usd: float
    currency: str = "USD"


# -- secrets -------------------------------------------------------------------------------
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
_KEY_PREFIXES = ("sk-", "sk_", "pk-", "pk_", "rk-", "xai-", "gsk_", "hf_", "ghp_", "gho_", "github_pat_",
                 "glpat-", "AIza", "AKIA", "ASIA", "Bearer ", "bearer ", "key-", "ya29.")
_SECRET_CONFIG_KEYS = frozenset(
    {"api_key", "apikey", "key", "secret", "token", "access_token", "password", "authorization",
     "x-api-key", "headers", "extra_headers", "client_secret"}
)


def _entropy_bits(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _looks_like_key(value: str) -> bool:
    if value.startswith(_KEY_PREFIXES):
        return True
    has_digit = any(ch.isdigit() for ch in value)
    if len(value) >= 16 and "_" not in value and has_digit:
        return True  # e.g. an AWS key id: upper case, digits, no word breaks
    return len(value) >= 20 and has_digit and _entropy_bits(value) > 4.0


def check_secret_ref(value: str | None) -> str | None:
    """Accept the *name* of an environment variable (``OPENAI_API_KEY``); refuse anything else.

    The value is never echoed in the error: it may be the key itself.
    """
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ConfigurationError("secret_ref must be the name of an environment variable, e.g. 'OPENAI_API_KEY'.")
    if _looks_like_key(value):
        raise ConfigurationError(
            "secret_ref looks like an API key itself; it was not stored. Pass the NAME of the "
            "environment variable that holds the key (e.g. secret_ref='OPENAI_API_KEY') and set "
            "that variable in every process that calls the model."
        )
    if not _ENV_NAME.match(value):
        raise ConfigurationError(
            "secret_ref must be an environment variable name: upper-case letters, digits and "
            "underscores, not starting with a digit (e.g. 'OPENAI_API_KEY'); it was not stored."
        )
    return value


def check_base_url(url: str | None) -> str | None:
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError("base_url must be an http(s) URL, e.g. 'http://127.0.0.1:8000/v1'.")
    if parts.username or parts.password:
        raise ConfigurationError(
            "base_url must not carry credentials (user:password@host); put the key in an "
            "environment variable and name it in secret_ref. The URL was not stored."
        )
    for key, _ in parse_qsl(parts.query):
        if key.lower().replace("-", "_") in _SECRET_CONFIG_KEYS or key.lower() in ("api_key", "key"):
            raise ConfigurationError(
                f"base_url carries a {key!r} query parameter; keys go in an environment variable "
                "named by secret_ref. The URL was not stored."
            )
    return url


def check_config(config: dict[str, Any] | None) -> dict[str, Any]:
    cfg = dict(config or {})
    for key in cfg:
        if not isinstance(key, str):
            raise ValidationError(f"config keys must be strings, got {type(key).__name__}.", field="config")
        if key.lower() in _SECRET_CONFIG_KEYS:
            raise ConfigurationError(
                f"config must not hold {key!r}: secrets are never stored. Name the environment "
                "variable holding the key in secret_ref instead. The config was not stored."
            )
    return cfg


# -- the model -------------------------------------------------------------------------------
@dataclass(slots=True, eq=False)
class Model:
    """A registered model. The registry hands out live objects (the router reads them on every
    call); change them through ``ModelRegistry`` methods, which also persist the change."""

    name: str
    provider: str
    model_name: str
    id: str = ""
    base_url: str | None = None
    secret_ref: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    status: ModelStatus = ModelStatus.TESTING
    status_reason: str | None = None
    input_price_per_1m_usd: float = 0.0
    output_price_per_1m_usd: float = 0.0
    max_tokens: int | None = None
    context_window: int | None = None
    supports_functions: bool = False
    supports_streaming: bool = False
    # measured
    average_latency_ms: float | None = None
    success_rate: float | None = None
    last_health_check_s: float | None = None
    last_call_s: float | None = None
    #: bumped whenever a field that the LM client depends on changes (the router rebuilds it)
    revision: int = 0

    # -- pure calculations ------------------------------------------------------------------
    def health_status(self, now_s: float, stale_after_s: float = DEFAULT_STALE_AFTER_S) -> HealthStatus:
        seen = _latest(self.last_health_check_s, self.last_call_s)
        if seen is None:
            return HealthStatus.UNKNOWN
        if now_s - seen > stale_after_s:
            return HealthStatus.STALE
        rate = self.success_rate
        if rate is not None and rate > 0.95:
            return HealthStatus.HEALTHY
        if rate is not None and rate > 0.8:
            return HealthStatus.DEGRADED
        return HealthStatus.UNHEALTHY

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_price_per_1m_usd + output_tokens * self.output_price_per_1m_usd) / 1e6

    @property
    def priced(self) -> bool:
        return self.input_price_per_1m_usd > 0 or self.output_price_per_1m_usd > 0

    def estimate_cost(self, text: str, output_tokens: int | None = None) -> CostEstimate:
        """Tokens of ``text`` (4 characters each) at the input price, plus ``output_tokens``
        (default: ``config["expected_output_tokens"]``, else 256, capped by ``max_tokens``) at
        the output price."""
        if not isinstance(text, str):
            raise ValidationError("estimate_cost takes the prompt text as a string.", field="text")
        tin = estimate_tokens(len(text))
        tout = self.expected_output_tokens() if output_tokens is None else int(output_tokens)
        if tout < 0:
            raise ValidationError("output_tokens must be >= 0.", field="output_tokens")
        return CostEstimate(tin, tout, self.cost_usd(tin, tout))

    def expected_output_tokens(self) -> int:
        out = int(self.config.get("expected_output_tokens", DEFAULT_OUTPUT_TOKENS))
        return min(out, self.max_tokens) if self.max_tokens else out

    def fits(self, tokens: int) -> bool:
        """Whether a request of ``tokens`` (prompt plus reserved reply) fits the context window."""
        return self.context_window is None or tokens <= self.context_window

    # -- measured metrics -------------------------------------------------------------------
    def observe(self, *, success: bool, latency_ms: float | None, now_s: float, probe: bool = False) -> None:
        """Fold one call's (or health probe's) outcome into the moving averages."""
        s = 1.0 if success else 0.0
        # A model is presumed to work until calls say otherwise: the first failure takes an
        # unmeasured model to 0.9 (degraded), not to 0 (unhealthy after a single blip).
        rate = 1.0 if self.success_rate is None else self.success_rate
        self.success_rate = rate + EMA_ALPHA * (s - rate)
        if success and latency_ms is not None:
            # Only successful calls say how fast the model answers; a refused connection is fast.
            lat = self.average_latency_ms
            self.average_latency_ms = latency_ms if lat is None else lat + EMA_ALPHA * (latency_ms - lat)
        if probe:
            self.last_health_check_s = now_s
        else:
            self.last_call_s = now_s


def _latest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)
