"""Program versions as plain data, for Serve config files and the admin endpoint.

    {"version": 2,
     "factory": "mypkg.programs:QA",          # a Module class or a function returning a program
     "state": {...} | "state_path": "qa.json",  # learned state (program.save / dump_state)
     "lm": {"model": "openai/sim-small", "api_base": "http://...", "api_key_env": "SIM_KEY",
            "num_retries": 0},
     "adapter": "chat" | "json",
     "max_in_flight": 64, "max_queued": 0, "call_timeout_s": 30}

The LM takes its key from ``api_key_env`` (never a key in the file: config files are stored
and shown by ``serve status``). The program is imported where the version's replicas run.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dspex.actors.spec import VersionSpec

from dspex.errors import ConfigurationError

__all__ = ["import_object", "plan_from_config", "spec_from_config"]

_SPEC_KEYS = {"version", "factory", "state", "state_path", "lm", "adapter", "max_in_flight", "max_queued",
              "call_timeout_s", "history_size", "metadata"}


def import_object(path: str) -> Any:
    """``"package.module:attr"`` (or ``package.module.attr``) -> the object."""
    if not isinstance(path, str) or not path:
        raise ConfigurationError(f"An import path is 'module:attribute', got {path!r}.")
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attr:
        raise ConfigurationError(f"An import path is 'module:attribute', got {path!r}.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"Cannot import module {module_name!r} of {path!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ConfigurationError(f"{module_name!r} has no attribute {attr!r} (from {path!r}).") from exc
    return obj


def _lm(config: Any) -> Any:
    if config is None:
        return None
    if isinstance(config, str):
        config = {"model": config}
    if not isinstance(config, Mapping) or "model" not in config:
        raise ConfigurationError(f"'lm' is a model name or a mapping with 'model', got {config!r}.")
    if "api_key" in config:
        raise ConfigurationError("Do not put an API key in a version config; name its environment variable in 'api_key_env'.")
    from dspex.clients.lm import LM

    kwargs = dict(config)
    return LM(kwargs.pop("model"), **kwargs)


def _adapter(name: Any) -> Any:
    if name is None:
        return None
    from dspex.adapters import ChatAdapter, JSONAdapter

    adapters = {"chat": ChatAdapter, "json": JSONAdapter}
    if name not in adapters:
        raise ConfigurationError(f"'adapter' is one of {sorted(adapters)}, got {name!r}.")
    return adapters[name]()


def spec_from_config(program: str, config: Mapping[str, Any]) -> VersionSpec:
    """A ``VersionSpec`` of ``program`` from plain data (see the module docstring)."""
    if not isinstance(config, Mapping):
        raise ConfigurationError(f"A version config is a mapping, got {type(config).__name__}.")
    unknown = sorted(set(config) - _SPEC_KEYS)
    if unknown:
        raise ConfigurationError(f"Unknown key(s) {unknown} in the version config of {program!r}; known: {sorted(_SPEC_KEYS)}.")
    if "version" not in config or "factory" not in config:
        raise ConfigurationError(f"A version config of {program!r} needs 'version' and 'factory' (an import path).")
    factory = import_object(str(config["factory"]))
    if not callable(factory):
        raise ConfigurationError(f"The factory {config['factory']!r} is not callable.")
    state = config.get("state")
    if state is None and config.get("state_path"):
        try:
            state = json.loads(Path(str(config["state_path"])).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigurationError(f"Cannot read the state file {config['state_path']!r}: {exc}") from exc
    extra = {k: config[k] for k in ("max_in_flight", "max_queued", "call_timeout_s", "history_size", "metadata") if k in config}
    return VersionSpec(
        program,
        config["version"],
        factory=factory,
        state=state,
        lm=_lm(config.get("lm")),
        adapter=_adapter(config.get("adapter")),
        **extra,
    )


def plan_from_config(config: Mapping[str, Any] | None) -> Any:
    """A ``RolloutPlan`` from ``{"strategy": "immediate" | "staged", "steps", "step_s",
    "failure_threshold", "health": {...}}`` (default: immediate)."""
    from dspex.actors.health import HealthPolicy
    from dspex.actors.rollout import RolloutPlan

    config = dict(config or {})
    strategy = config.pop("strategy", "immediate")
    if strategy == "immediate":
        if config:
            raise ConfigurationError(f"An immediate rollout takes no options, got {sorted(config)}.")
        return RolloutPlan.immediate()
    if strategy != "staged":
        raise ConfigurationError(f"A rollout strategy is 'immediate' or 'staged', got {strategy!r}.")
    health = config.pop("health", None)
    if health is not None:
        config["health"] = HealthPolicy(**health)
    if "steps" in config:
        config["steps"] = tuple(float(s) for s in config["steps"])
    try:
        return RolloutPlan(**config)
    except TypeError as exc:
        raise ConfigurationError(f"Bad rollout plan {config}: {exc}") from exc
