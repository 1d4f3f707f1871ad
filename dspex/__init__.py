"""dspex: DSPy's programming model on Ray, with the operations DSPy leaves to its users.

``import dspex as dspy`` keeps a DSPy program working.
"""

from dspex import errors, telemetry
from dspex.clients.base_lm import BaseLM, inspect_history
from dspex.primitives.example import Example
from dspex.primitives.prediction import Completions, Prediction
from dspex.settings import configure, context, settings

__version__ = "0.1.0"

__all__ = [
    "BaseLM",
    "Completions",
    "Example",
    "Prediction",
    "configure",
    "context",
    "errors",
    "inspect_history",
    "settings",
    "telemetry",
]
