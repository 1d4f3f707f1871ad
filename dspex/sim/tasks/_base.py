"""What a synthetic task is: generated examples, a signature, a metric, hints and clusters.

Every generated example carries a reference tag in its key input, e.g.
``"... How many apples are left? (ref arithmetic:0:train:17)"``. The tag names the task, seed,
split and index, and an example is a pure function of those four, so the server recognises
an example in any prompt (also in demos) and regenerates its gold answer, cluster and
difficulty without sharing state with the process that loaded the dataset.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from dspex.primitives.example import Example
from dspex.sim._draw import digest

__all__ = [
    "REF_RE",
    "AnswerMatch",
    "Hint",
    "SimExample",
    "Task",
    "normalize_answer",
    "parse_ref",
]

#: ``(ref <task>:<seed>:<split>:<index>)``
REF_RE = re.compile(r"\(ref ([a-z][a-z0-9_]*):(\d+):([a-z]+):(\d+)\)")


@dataclass(frozen=True)
class Hint:
    """A phrase that, present in the instructions, moves p(correct) by ``weight`` (logit units).

    Helpful hints have a positive weight, misleading phrases a negative one.
    """

    phrase: str
    weight: float

    def sentence(self) -> str:
        return self.phrase[:1].upper() + self.phrase[1:] + "."


@dataclass(frozen=True)
class SimExample:
    """One generated example with everything the answer model needs."""

    task: str
    seed: int
    split: str
    index: int
    inputs: dict[str, Any]
    answer: str
    cluster: str
    difficulty: float
    #: plausible wrong answers, most plausible first; never contains the answer
    distractors: tuple[str, ...]
    #: a short correct solution (the reasoning of a correct reply)
    rationale: str
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.task}:{self.seed}:{self.split}:{self.index}"

    def to_example(self, answer_field: str) -> Example:
        """A ``dspex.Example`` with the inputs marked; ``cluster``, ``difficulty``,
        ``distractors`` and ``sim_ref`` ride along as labels (metrics ignore them)."""
        ex = Example(
            {
                **self.inputs,
                answer_field: self.answer,
                "cluster": self.cluster,
                "difficulty": self.difficulty,
                "distractors": list(self.distractors),
                "sim_ref": self.ref,
            }
        )
        return ex.with_inputs(*self.inputs)


def parse_ref(text: str) -> tuple[str, int, str, int] | None:
    """The first reference tag in ``text`` as (task, seed, split, index), or None."""
    m = REF_RE.search(text)
    if m is None:
        return None
    return m.group(1), int(m.group(2)), m.group(3), int(m.group(4))


_NUM_RE = re.compile(r"^[-+]?\$?\d[\d,]*(\.\d+)?$")


def normalize_answer(value: Any) -> str:
    """Comparable form of an answer: case, spacing, quotes, a trailing period, ``$`` and
    thousands separators removed; ``42.0`` and ``42`` compare equal."""
    s = str(value).strip().strip("«»\"'`").strip()
    s = s.rstrip(".").strip()
    s = re.sub(r"\s+", " ", s).lower()
    if _NUM_RE.match(s):
        num = float(s.replace("$", "").replace(",", ""))
        return str(int(num)) if num.is_integer() else repr(num)
    return s


class AnswerMatch:
    """The tasks' metric: normalized exact match of one field. A class (not a closure) so it
    pickles across Ray workers."""

    def __init__(self, field_name: str) -> None:
        self.field_name = field_name

    def __call__(self, example: Any, prediction: Any, trace: Any = None) -> bool:
        gold = _get(example, self.field_name)
        got = _get(prediction, self.field_name)
        if gold is None or got is None:
            return False
        return normalize_answer(gold) == normalize_answer(got)

    def __repr__(self) -> str:
        return f"AnswerMatch({self.field_name!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AnswerMatch) and other.field_name == self.field_name

    def __hash__(self) -> int:
        return hash(("AnswerMatch", self.field_name))


def _get(obj: Any, key: str) -> Any:
    if isinstance(obj, dict):
        return obj.get(key)
    try:
        return obj[key]
    except Exception:
        return getattr(obj, key, None)


class Task(ABC):
    """A synthetic task. Subclasses set the class attributes and implement ``_generate``."""

    name: str
    #: DSPy string form of the task's signature
    signature: str
    #: the input that carries the reference tag
    key_input: str
    input_fields: tuple[str, ...]
    answer_field: str
    clusters: tuple[str, ...]
    hints: tuple[Hint, ...]
    misleading: tuple[Hint, ...]
    #: one sentence on what the examples are (used in dataset descriptions and proposals)
    description: str

    @property
    def metric(self) -> AnswerMatch:
        return AnswerMatch(self.answer_field)

    @property
    def fields(self) -> frozenset[str]:
        return frozenset((*self.input_fields, self.answer_field))

    def best_instruction(self) -> str:
        """The instruction holding every helpful hint and no misleading phrase."""
        return " ".join([self.opener(), *(h.sentence() for h in self.hints)])

    def opener(self) -> str:
        ins = ", ".join(f"`{f}`" for f in self.input_fields)
        return f"Given the fields {ins}, produce the field `{self.answer_field}`."

    def example(self, seed: int, split: str, index: int) -> SimExample:
        """The example at (seed, split, index); a pure function of them (cached)."""
        return _cached_example(self, int(seed), split, int(index))

    def load(self, n: int, seed: int = 0, split: str = "train") -> list[SimExample]:
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        if not re.fullmatch(r"[a-z]+", split):
            raise ValueError(
                f"split must be a lowercase word such as 'train', 'dev' or 'test', got {split!r}"
            )
        return [self.example(seed, split, i) for i in range(n)]

    def tag(self, text: str, seed: int, split: str, index: int) -> str:
        return f"{text} (ref {self.name}:{seed}:{split}:{index})"

    @abstractmethod
    def _generate(self, rng: random.Random, seed: int, split: str, index: int) -> SimExample:
        """Build one example from ``rng`` (already seeded from the four coordinates)."""

    def __repr__(self) -> str:
        return f"<Task {self.name}: {self.signature!r}, clusters={list(self.clusters)}>"


@lru_cache(maxsize=16_384)
def _cached_example(task: Task, seed: int, split: str, index: int) -> SimExample:
    rng = random.Random(int.from_bytes(digest("example", task.name, seed, split, index)[:8], "big"))
    return task._generate(rng, seed, split, index)


def clip01(x: float, lo: float = 0.02, hi: float = 0.98) -> float:
    return round(min(hi, max(lo, x)), 4)


def unique_distractors(
    gold: str, candidates: list[str], fill: list[str], k: int = 4
) -> tuple[str, ...]:
    """Up to ``k`` candidates that differ from ``gold`` (after normalization) and each other."""
    seen = {normalize_answer(gold)}
    out: list[str] = []
    for c in [*candidates, *fill]:
        key = normalize_answer(c)
        if key in seen or not str(c).strip():
            continue
        seen.add(key)
        out.append(str(c))
        if len(out) == k:
            break
    return tuple(out)
