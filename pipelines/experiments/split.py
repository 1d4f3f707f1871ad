"""Seeded train/test split, stratified by a discrete label.

The same (examples, sizes, seed) always give the same split, in any process. Stratified:
each label's examples are shuffled and the test split takes from every label in proportion
to its share (largest remainders), so a 200-example test set of a 6-class task holds each
class about as often as the whole dataset does; the arms then see the same mix.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dspex.errors import ExperimentError

__all__ = ["Split", "is_discrete", "split_examples"]


@dataclass(frozen=True)
class Split:
    train: list[Any]
    test: list[Any]
    #: positions of the test examples in the dataset (the same for every arm)
    test_indices: list[int]
    stratified_by: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "train_size": len(self.train),
            "test_size": len(self.test),
            "test_indices": list(self.test_indices),
            "stratified_by": self.stratified_by,
        }


def _label_of(example: Any, field: str) -> Hashable:
    value = example.get(field) if hasattr(example, "get") else None
    if isinstance(value, list):
        return tuple(value)
    try:
        hash(value)
    except TypeError:
        return repr(value)
    return value


def is_discrete(labels: Sequence[Hashable]) -> bool:
    """A label is discrete when it takes few values: at most max(2, n / 5) distinct ones,
    and no float that is not a whole number (scores are not classes)."""
    if not labels:
        return False
    if any(isinstance(v, float) and not float(v).is_integer() for v in labels):
        return False
    return len(set(labels)) <= max(2, len(labels) // 5)


def split_examples(
    examples: Sequence[Any],
    *,
    n_train: int,
    n_test: int,
    seed: int,
    label_field: str | None = None,
    stratify: bool | str = "auto",
) -> Split:
    """Split ``examples`` into ``n_train`` train and ``n_test`` test examples (disjoint)."""
    n = len(examples)
    if n_train < 0 or n_test < 1 or n_train + n_test > n:
        raise ExperimentError(
            f"Cannot split {n} examples into {n_train} train and {n_test} test; need "
            "n_train >= 0, n_test >= 1 and n_train + n_test <= the number of examples."
        )
    rng = np.random.default_rng([int(seed), 0x5EED])
    labels = [_label_of(e, label_field) for e in examples] if label_field else []
    if stratify is True and not label_field:
        raise ExperimentError("stratify=True needs a label_field (the field holding the class).")
    use_strata = bool(label_field) and (
        stratify is True or (stratify == "auto" and is_discrete(labels))
    )
    if not use_strata:
        order = rng.permutation(n)
        test_idx = sorted(int(i) for i in order[:n_test])
        rest = [int(i) for i in order[n_test:]]
        train_idx = rest[:n_train]
        return Split(
            [examples[i] for i in train_idx], [examples[i] for i in test_idx], test_idx, None
        )
    test_idx = _stratified_take(labels, n_test, rng)
    chosen = set(test_idx)
    remaining = [i for i in range(n) if i not in chosen]
    train_pick = [remaining[int(i)] for i in rng.permutation(len(remaining))[:n_train]]
    # train keeps the shuffled order (optimizers read it in order); test keeps dataset order
    return Split(
        [examples[i] for i in train_pick], [examples[i] for i in test_idx], test_idx, label_field
    )


def _stratified_take(labels: list[Hashable], k: int, rng: np.random.Generator) -> list[int]:
    groups: dict[Hashable, list[int]] = {}
    for i, lab in enumerate(labels):
        groups.setdefault(lab, []).append(i)
    keys = sorted(groups, key=repr)  # a fixed order, whatever the hash seed
    n = len(labels)
    quotas = {g: k * len(groups[g]) / n for g in keys}
    take = {g: int(quotas[g]) for g in keys}
    short = k - sum(take.values())
    # largest remainders first; ties broken by the seeded shuffle, not by label order
    tiebreak = {g: float(r) for g, r in zip(keys, rng.random(len(keys)), strict=True)}
    for g in sorted(keys, key=lambda g: (-(quotas[g] - take[g]), tiebreak[g]))[:short]:
        take[g] += 1
    out: list[int] = []
    for g in keys:
        members = groups[g]
        picked = rng.permutation(len(members))[: take[g]]
        out.extend(members[int(i)] for i in picked)
    return sorted(out)
