"""Common metrics, as DSPy ships them (``dspy.evaluate.answer_exact_match`` ...)."""

from __future__ import annotations

import re
import string
import unicodedata
from typing import Any

__all__ = ["answer_exact_match", "answer_passage_match", "normalize_text"]


def normalize_text(s: str) -> str:
    """Lower-case, strip accents, punctuation, articles and extra whitespace (SQuAD's rule)."""
    s = unicodedata.normalize("NFD", str(s))
    s = "".join(ch for ch in s if unicodedata.category(ch) != "Mn").lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def answer_exact_match(example: Any, pred: Any, trace: Any = None, frac: float = 1.0) -> bool:
    golds = example.answer if isinstance(example.answer, list) else [example.answer]
    got = normalize_text(str(pred.answer))
    return any(normalize_text(str(g)) == got for g in golds)


def answer_passage_match(example: Any, pred: Any, trace: Any = None) -> bool:
    golds = example.answer if isinstance(example.answer, list) else [example.answer]
    passages = getattr(pred, "context", []) or []
    return any(normalize_text(str(g)) in normalize_text(str(p)) for p in passages for g in golds)
