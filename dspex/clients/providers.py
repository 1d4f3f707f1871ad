"""Providers: who we talk to (base URL, auth, what the endpoint can do), apart from the wire
format (``dspex.clients.wire``), as pydantic-ai splits ``providers/`` from ``models/``.

``resolve_model("openai/gpt-4o-mini")`` reads DSPy's model string: the prefix names the
provider, the rest is the model name sent on the wire. Bare names go to OpenAI unless they
start with ``claude``. Any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, a gateway,
the dspex simulator) is ``"openai/<model>"`` with ``api_base=``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from dspex.clients._secret import Secret
from dspex.errors import ConfigurationError, SecretError

__all__ = ["Capabilities", "ProviderSpec", "resolve_model"]


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What an endpoint accepts natively; request strategies degrade from these."""

    n: bool = True  # several choices in one request
    json_object: bool = True  # response_format {"type": "json_object"}
    json_schema: bool = True  # response_format {"type": "json_schema", ...}
    tools: bool = True  # function / tool calling
    stream_usage: bool = True  # stream_options.include_usage

    def with_(self, **changes: Any) -> Capabilities:
        return replace(self, **changes)

    def features(self) -> frozenset[str]:
        """``BaseLM.capabilities``: what an adapter may ask for. Structured output counts when
        it is native or can go through a forced tool call (Anthropic)."""
        out = {"streaming"}
        if self.json_schema or self.tools:
            out.add("json_schema")
        if self.json_object:
            out.add("json_object")
        if self.tools:
            out.add("tools")
        if self.n:
            out.add("n")
        return frozenset(out)


OPENAI_CAPS = Capabilities()
# Anthropic messages: no `n`, no response_format; structured output goes through a forced tool.
ANTHROPIC_CAPS = Capabilities(n=False, json_object=False, json_schema=False, tools=True)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider endpoint: wire format, URL, auth, capabilities. Holds no secret itself."""

    name: str  # "openai", "anthropic", "ollama", ...
    wire: str  # "openai_chat" or "anthropic_messages"
    model: str  # the name sent on the wire
    base_url: str  # e.g. https://api.openai.com/v1 (OpenAI) or https://api.anthropic.com (Anthropic)
    key_env_vars: tuple[str, ...]
    key_required: bool
    capabilities: Capabilities

    @property
    def url(self) -> str:
        """The POST target for a chat call."""
        if self.wire == "anthropic_messages":
            base = self.base_url.rstrip("/")
            if base.endswith("/v1/messages"):
                return base
            if base.endswith("/v1"):
                return base + "/messages"
            return base + "/v1/messages"
        return self.base_url.rstrip("/") + "/chat/completions"

    @property
    def endpoint_id(self) -> str:
        """Names the endpoint for per-endpoint resilience state and telemetry."""
        return f"{self.name}:{self.base_url.rstrip('/')}:{self.model}"

    def headers(self, secret: Secret) -> dict[str, str]:
        key = secret.reveal()
        if key is None and self.key_required:
            names = " or ".join(self.key_env_vars) or "api_key_env="
            raise SecretError(
                f"No API key for {self.name} model {self.model!r}: pass api_key=, or set {names}.",
            )
        headers = {"content-type": "application/json", "accept": "application/json"}
        if self.wire == "anthropic_messages":
            headers["anthropic-version"] = "2023-06-01"
            if key:
                headers["x-api-key"] = key
        elif key:
            headers["authorization"] = f"Bearer {key}"
        return headers


# prefix -> (provider name, wire, default base URL or None when api_base is required,
#            env vars for the key, env vars for the base URL, key required on the default base)
_PREFIXES: dict[str, tuple[str, str, str | None, tuple[str, ...], tuple[str, ...], bool]] = {
    "openai": ("openai", "openai_chat", "https://api.openai.com/v1",
               ("OPENAI_API_KEY",), ("OPENAI_API_BASE", "OPENAI_BASE_URL"), True),
    "anthropic": ("anthropic", "anthropic_messages", "https://api.anthropic.com",
                  ("ANTHROPIC_API_KEY",), ("ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"), True),
    "ollama": ("ollama", "openai_chat", "http://localhost:11434/v1", ("OLLAMA_API_KEY",),
               ("OLLAMA_API_BASE",), False),
    "ollama_chat": ("ollama", "openai_chat", "http://localhost:11434/v1", ("OLLAMA_API_KEY",),
                    ("OLLAMA_API_BASE",), False),
    "vllm": ("vllm", "openai_chat", None, ("VLLM_API_KEY", "HOSTED_VLLM_API_KEY"),
             ("VLLM_API_BASE", "HOSTED_VLLM_API_BASE"), False),
    "hosted_vllm": ("vllm", "openai_chat", None, ("HOSTED_VLLM_API_KEY", "VLLM_API_KEY"),
                    ("HOSTED_VLLM_API_BASE", "VLLM_API_BASE"), False),
    "llamacpp": ("llamacpp", "openai_chat", "http://localhost:8080/v1", ("LLAMACPP_API_KEY",),
                 ("LLAMACPP_API_BASE",), False),
    "openai_compatible": ("openai_compatible", "openai_chat", None, ("OPENAI_API_KEY",),
                          ("OPENAI_API_BASE",), False),
}


def _normalize_base(base: str, wire: str) -> str:
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"api_base {base!r} is not an http(s) URL; pass e.g. api_base='http://127.0.0.1:8000/v1'."
        )
    # An OpenAI-compatible server given as a bare host (no path) serves the API under /v1.
    if wire == "openai_chat" and parts.path in ("", "/"):
        return base.rstrip("/") + "/v1"
    return base.rstrip("/")


def resolve_model(
    model: str,
    *,
    api_base: str | None = None,
    api_key_env: str | None = None,
    capabilities: Capabilities | dict[str, bool] | None = None,
) -> ProviderSpec:
    """Turn DSPy's ``"provider/model"`` string into a ``ProviderSpec``."""
    if not isinstance(model, str) or not model.strip():
        raise ConfigurationError(
            f"An LM needs a model name such as 'openai/gpt-4o-mini', got {model!r}."
        )
    model = model.strip()
    prefix, _, rest = model.partition("/")
    if rest and prefix in _PREFIXES:
        key = prefix
        wire_model = rest
    elif rest and prefix not in _PREFIXES and "/" in model and api_base is None:
        known = ", ".join(sorted(_PREFIXES))
        raise ConfigurationError(
            f"Unknown provider prefix {prefix!r} in model {model!r}. Known prefixes: {known}; "
            "for any OpenAI-compatible server use 'openai/<model>' with api_base=."
        )
    else:
        # A bare name, or an org/model name served by an OpenAI-compatible api_base.
        key = "anthropic" if model.startswith("claude") else "openai"
        wire_model = model
    name, wire, default_base, key_envs, base_envs, key_required = _PREFIXES[key]
    base = api_base or next((os.environ[v] for v in base_envs if os.environ.get(v)), None) or default_base
    if base is None:
        raise ConfigurationError(
            f"Model {model!r} needs api_base= (the server's URL, e.g. 'http://127.0.0.1:8000/v1')."
        )
    base = _normalize_base(base, wire)
    # A key is required only for the vendor's own service; a local or self-hosted server
    # (custom api_base) may run without one.
    required = key_required and default_base is not None and base == _normalize_base(default_base, wire)
    caps = ANTHROPIC_CAPS if wire == "anthropic_messages" else OPENAI_CAPS
    if isinstance(capabilities, Capabilities):
        caps = capabilities
    elif capabilities:
        try:
            caps = caps.with_(**capabilities)
        except TypeError as exc:
            raise ConfigurationError(
                f"Unknown capability in {sorted(capabilities)}; known: n, json_object, json_schema, "
                "tools, stream_usage."
            ) from exc
    envs = (api_key_env,) if api_key_env else key_envs
    return ProviderSpec(name, wire, wire_model, base, envs, required, caps)
