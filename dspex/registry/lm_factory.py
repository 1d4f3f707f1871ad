"""``lm_for(model)``: the one place a registered model becomes an LM client.

The key is never handled here: the client is given the *name* of the environment variable
(``api_key_env=model.secret_ref``) and reads it itself, in the process that makes the call.

Provider mapping: ``openai`` and ``anthropic`` use their own APIs (``base_url`` overrides the
address); ``cohere`` goes to Cohere's OpenAI-compatible endpoint; ``local``, ``huggingface``
(TGI) and ``openai_compatible`` are OpenAI-compatible servers and need a ``base_url``;
``ollama``, ``vllm`` and ``llamacpp`` use the client's own prefixes.

The client's own retries are off by default (``num_retries=0``): the router decides whether
to retry, fall back or back off, so a dead primary costs one failed attempt, not a retry
loop (LiteLLM's defaults spent 4-5 s per call there; notes/ray-measured.md). A model's
``config`` may set ``num_retries`` and any other LM setting (``timeout_s``, ``rpm``,
``temperature``, ...); ``expected_output_tokens`` is the registry's own and is not passed on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dspex.errors import ConfigurationError
from dspex.registry.model import Model

if TYPE_CHECKING:
    from dspex.clients.base_lm import BaseLM

__all__ = ["lm_for"]

_PREFIX = {
    "openai": "openai",
    "anthropic": "anthropic",
    "cohere": "openai",
    "local": "openai",
    "huggingface": "openai",
    "openai_compatible": "openai",
    "ollama": "ollama",
    "vllm": "vllm",
    "llamacpp": "llamacpp",
}
_DEFAULT_BASE = {"cohere": "https://api.cohere.ai/compatibility/v1"}
_NEEDS_BASE = frozenset({"local", "huggingface", "openai_compatible", "vllm"})
_REGISTRY_ONLY_CONFIG = frozenset({"expected_output_tokens"})


def lm_kwargs(model: Model) -> dict[str, Any]:
    """The keyword arguments ``lm_for`` passes to ``dspex.clients.LM`` (no key among them)."""
    prefix = _PREFIX.get(model.provider)
    if prefix is None:
        raise ConfigurationError(f"Model {model.name!r} has provider {model.provider!r}, which no LM client speaks.")
    base = model.base_url or _DEFAULT_BASE.get(model.provider)
    if base is None and model.provider in _NEEDS_BASE:
        raise ConfigurationError(
            f"Model {model.name!r} (provider {model.provider!r}) needs a base_url, e.g. "
            "'http://127.0.0.1:8000/v1'; set it with registry.update(name, base_url=...)."
        )
    kwargs: dict[str, Any] = {"model": f"{prefix}/{model.model_name}", "num_retries": 0}
    if base is not None:
        kwargs["api_base"] = base
    if model.secret_ref is not None:
        kwargs["api_key_env"] = model.secret_ref
    if model.max_tokens is not None:
        kwargs["max_tokens"] = model.max_tokens
    for key, value in model.config.items():
        if key not in _REGISTRY_ONLY_CONFIG:
            kwargs[key] = value
    return kwargs


def lm_for(model: Model) -> BaseLM:
    """A ``dspex.clients.LM`` for ``model``."""
    from dspex.clients.lm import LM

    return LM(**lm_kwargs(model))
