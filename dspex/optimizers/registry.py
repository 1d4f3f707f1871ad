"""Optimizers by name: ``get_optimizer``, ``list_optimizers``, ``info`` (the seed's §3.1)."""

from __future__ import annotations

import threading
from typing import Any

from dspex.errors import NotFound, OptimizerError
from dspex.optimizers.advanced_bootstrap import AdvancedBootstrap
from dspex.optimizers.base import OptimizerInfo, Teleprompter
from dspex.optimizers.bayesian import BayesianOptimizer
from dspex.optimizers.bootstrap import BootstrapFewShot
from dspex.optimizers.copro import COPRO
from dspex.optimizers.labeled import LabeledFewShot
from dspex.optimizers.mipro import MIPROv2
from dspex.optimizers.multi_objective import MultiObjective
from dspex.optimizers.random_search import BootstrapFewShotWithRandomSearch

__all__ = ["get_optimizer", "info", "list_optimizers", "register_optimizer"]

_lock = threading.Lock()
_REGISTRY: dict[str, type[Teleprompter]] = {
    "LabeledFewShot": LabeledFewShot,
    "BootstrapFewShot": BootstrapFewShot,
    "BootstrapFewShotWithRandomSearch": BootstrapFewShotWithRandomSearch,
    "AdvancedBootstrap": AdvancedBootstrap,
    "COPRO": COPRO,
    "MIPROv2": MIPROv2,
    "BayesianOptimizer": BayesianOptimizer,
    "MultiObjective": MultiObjective,
}
#: other names users know them by (the seed says "MIPRO")
_ALIASES = {"MIPRO": "MIPROv2"}


def get_optimizer(name: str) -> type[Teleprompter]:
    """The optimizer class registered under ``name`` (``NotFound`` lists the names)."""
    with _lock:
        cls = _REGISTRY.get(_ALIASES.get(name, name))
        names = sorted(_REGISTRY)
    if cls is None:
        raise NotFound(f"Unknown optimizer {name!r}; the optimizers are {names}.", name=name)
    return cls


def list_optimizers() -> list[str]:
    with _lock:
        return sorted(_REGISTRY)


def info(name: str) -> OptimizerInfo:
    """Name, description and parameters (name, type, default, description) of an optimizer."""
    return get_optimizer(name).info()


def register_optimizer(name: str, cls: type[Any], *, replace: bool = False) -> None:
    """Add an optimizer class (a ``Teleprompter`` subclass) under ``name``."""
    if not isinstance(cls, type) or not issubclass(cls, Teleprompter):
        raise OptimizerError(f"Register a dspex.optimizers.Teleprompter subclass, got {cls!r}.")
    if not name or not isinstance(name, str):
        raise OptimizerError(f"An optimizer needs a non-empty name, got {name!r}.")
    with _lock:
        if name in _REGISTRY and not replace:
            raise OptimizerError(f"An optimizer named {name!r} is already registered; pass replace=True to replace it.")
        _REGISTRY[name] = cls
