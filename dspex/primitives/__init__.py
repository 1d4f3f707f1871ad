"""Example, Prediction, Module, Tool."""

from dspex.primitives.example import Example
from dspex.primitives.history import History
from dspex.primitives.module import BaseModule, Module, Parameter
from dspex.primitives.prediction import Completions, Prediction
from dspex.primitives.tool import Tool

__all__ = ["BaseModule", "Completions", "Example", "History", "Module", "Parameter", "Prediction", "Tool"]
