"""Evaluation: run programs over datasets concurrently and score them."""

from dspex.evaluate.evaluate import Evaluate, EvaluationResult
from dspex.evaluate.metrics import answer_exact_match, answer_passage_match, normalize_text

__all__ = ["Evaluate", "EvaluationResult", "answer_exact_match", "answer_passage_match", "normalize_text"]
