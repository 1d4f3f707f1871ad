"""dspex: DSPy's programming model on Ray, with the operations DSPy leaves to its users.

``import dspex as dspy`` keeps a DSPy program working:

    import dspex as dspy
    dspy.configure(lm=dspy.LM("openai/gpt-4o-mini"))
    qa = dspy.ChainOfThought("question -> answer")
    print(qa(question="What is the capital of France?").answer)

The core (this package) never imports Ray; ``dspex.actors``, ``dspex.pipelines`` and
``dspex.cluster`` build on it.
"""

from typing import Any

from dspex import errors, streaming, telemetry, types
from dspex.adapters import Adapter, ChatAdapter, JSONAdapter
from dspex.clients.base_lm import BaseLM, inspect_history
from dspex.evaluate import Evaluate, EvaluationResult
from dspex.predict import BestOfN, ChainOfThought, Predict, ProgramGraph, ReAct, Refine, majority
from dspex.primitives import (
    BaseModule,
    Completions,
    Example,
    History,
    Module,
    Parameter,
    Prediction,
    Tool,
)
from dspex.settings import configure, context, settings
from dspex.signatures import InputField, OutputField, Signature, ensure_signature, make_signature
from dspex.streaming import streamify
from dspex.utils.callback import BaseCallback
from dspex.utils.parallelizer import Parallel, asyncify
from dspex.utils.saving import load
from dspex.utils.usage_tracker import track_usage

__version__ = "0.1.0"

__all__ = [
    "COPRO",
    "LM",
    "Adapter",
    "AdvancedBootstrap",
    "BaseCallback",
    "BaseLM",
    "BaseModule",
    "BayesianOptimizer",
    "BestOfN",
    "BootstrapFewShot",
    "BootstrapFewShotWithRandomSearch",
    "ChainOfThought",
    "ChatAdapter",
    "Completions",
    "Evaluate",
    "EvaluationResult",
    "Example",
    "History",
    "InputField",
    "JSONAdapter",
    "LabeledFewShot",
    "MIPROv2",
    "ModelRegistry",
    "ModelRouter",
    "Module",
    "MultiObjective",
    "OutputField",
    "Parallel",
    "Parameter",
    "Predict",
    "Prediction",
    "ProgramGraph",
    "ReAct",
    "Refine",
    "RoutedLM",
    "Signature",
    "Tool",
    "asyncify",
    "configure",
    "configure_cache",
    "context",
    "ensure_signature",
    "errors",
    "inspect_history",
    "load",
    "majority",
    "make_signature",
    "open_store",
    "optimizers",
    "settings",
    "streamify",
    "streaming",
    "telemetry",
    "teleprompt",
    "track_usage",
    "types",
]

# Names whose modules are heavier or optional; imported on first use.
_LAZY = {
    "LM": ("dspex.clients", "LM"),
    "configure_cache": ("dspex.clients", "configure_cache"),
    "DummyLM": ("dspex.utils.dummies", "DummyLM"),
    "RoutedLM": ("dspex.registry", "RoutedLM"),
    "ModelRegistry": ("dspex.registry", "ModelRegistry"),
    "ModelRouter": ("dspex.registry", "ModelRouter"),
    "open_store": ("dspex.store", "open_store"),
    "LabeledFewShot": ("dspex.optimizers", "LabeledFewShot"),
    "BootstrapFewShot": ("dspex.optimizers", "BootstrapFewShot"),
    "BootstrapFewShotWithRandomSearch": ("dspex.optimizers", "BootstrapFewShotWithRandomSearch"),
    "AdvancedBootstrap": ("dspex.optimizers", "AdvancedBootstrap"),
    "COPRO": ("dspex.optimizers", "COPRO"),
    "MIPROv2": ("dspex.optimizers", "MIPROv2"),
    "BayesianOptimizer": ("dspex.optimizers", "BayesianOptimizer"),
    "MultiObjective": ("dspex.optimizers", "MultiObjective"),
}


def __getattr__(name: str) -> Any:
    if name in ("optimizers", "teleprompt"):
        import importlib

        module = importlib.import_module(f"dspex.{name}")
        globals()[name] = module
        return module
    if name in _LAZY:
        import importlib

        module_name, attr = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dspex' has no attribute {name!r}")
