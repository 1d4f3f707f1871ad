"""Checking and coercing the arrays the statistics take.

Every public function in this package funnels its inputs through here, so a bad input (NaN,
mismatched lengths, a 0.7 in a pass/fail metric, alpha outside (0, 1)) fails with one kind of
error, ``ExperimentError``, whose message says what was wrong and how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from dspex.errors import ExperimentError

__all__ = [
    "Kind",
    "as_binary",
    "as_paired",
    "as_scores",
    "check_alpha",
    "check_kind",
    "check_probability",
]

#: "binary": pass/fail per example (0/1 or bool); "scored": a real-valued score per example.
Kind = Literal["binary", "scored"]

ArrayLike = npt.ArrayLike | Sequence[float] | Sequence[bool]


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """A significance level must lie strictly between 0 and 1."""
    try:
        value = float(alpha)
    except (TypeError, ValueError) as exc:
        raise ExperimentError(f"{name} must be a number in (0, 1), got {alpha!r}.") from exc
    if not 0.0 < value < 1.0 or math.isnan(value):
        raise ExperimentError(f"{name} must be in (0, 1), got {alpha!r}; 0.05 is the usual choice.")
    return value


def check_kind(kind: str) -> Kind:
    if kind == "binary":
        return "binary"
    if kind == "scored":
        return "scored"
    raise ExperimentError(f"kind must be 'binary' or 'scored', got {kind!r}.")


def check_probability(p: float, name: str) -> float:
    value = float(p)
    if not 0.0 < value < 1.0:
        raise ExperimentError(f"{name} must be in (0, 1), got {p!r}.")
    return value


def as_scores(values: ArrayLike, name: str = "scores") -> npt.NDArray[np.float64]:
    """A 1-d float array with at least one finite element and no NaN / inf."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ExperimentError(
            f"{name} must be a 1-d sequence of numbers, one per example; could not read it as numbers."
        ) from exc
    if arr.ndim != 1:
        raise ExperimentError(f"{name} must be 1-d (one value per example), got shape {arr.shape}.")
    if arr.size == 0:
        raise ExperimentError(f"{name} is empty; evaluate at least one example.")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ExperimentError(
            f"{name} holds {bad} NaN or infinite value(s); score failed examples explicitly "
            "(e.g. 0.0) instead of leaving them missing."
        )
    return arr


def as_binary(values: ArrayLike, name: str = "results") -> npt.NDArray[np.int64]:
    """A 1-d 0/1 array; bools are accepted, any other value is an error."""
    arr = as_scores(values, name)
    if not np.all((arr == 0.0) | (arr == 1.0)):
        raise ExperimentError(
            f"{name} must hold only pass/fail values (0/1 or bool) for kind='binary'; "
            "use kind='scored' for real-valued metrics."
        )
    return arr.astype(np.int64)


def as_paired(
    baseline: ArrayLike,
    variant: ArrayLike,
    kind: Kind,
    names: tuple[str, str] = ("baseline", "variant"),
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Two arrays of per-example results on the SAME examples, in the same order."""
    kind = check_kind(kind)
    if kind == "binary":
        a = as_binary(baseline, names[0]).astype(np.float64)
        b = as_binary(variant, names[1]).astype(np.float64)
    else:
        a = as_scores(baseline, names[0])
        b = as_scores(variant, names[1])
    if a.shape != b.shape:
        raise ExperimentError(
            f"{names[0]} has {a.size} examples but {names[1]} has {b.size}; paired tests need "
            "both evaluated on the same test examples, in the same order."
        )
    return a, b
