"""Predictors: Predict, ChainOfThought, ReAct, and the program graph."""

from dspex.predict.aggregation import BestOfN, Refine, majority
from dspex.predict.chain_of_thought import ChainOfThought
from dspex.predict.graph import ProgramGraph
from dspex.predict.predict import Predict
from dspex.predict.react import ReAct

__all__ = ["BestOfN", "ChainOfThought", "Predict", "ProgramGraph", "ReAct", "Refine", "majority"]
