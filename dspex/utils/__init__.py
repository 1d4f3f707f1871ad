"""Utilities: DummyLM, callbacks, usage tracking, Parallel / asyncify, load.

Names are loaded on first use: the LM base class itself imports ``dspex.utils`` modules.
"""

from typing import Any

__all__ = ["BaseCallback", "DummyLM", "Parallel", "UsageTracker", "asyncify", "load", "track_usage"]

_WHERE = {
    "BaseCallback": "dspex.utils.callback",
    "DummyLM": "dspex.utils.dummies",
    "Parallel": "dspex.utils.parallelizer",
    "asyncify": "dspex.utils.parallelizer",
    "load": "dspex.utils.saving",
    "UsageTracker": "dspex.utils.usage_tracker",
    "track_usage": "dspex.utils.usage_tracker",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        import importlib

        value = getattr(importlib.import_module(_WHERE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dspex.utils' has no attribute {name!r}")
