"""Turn the catalog's bindings into one fast function per binding, and cap label values.

Shared by every sink (the in-process store, the Ray bridge): an event resolves to a tuple of
``Compiled(metric, resolve, enum_index)`` where ``resolve(measurements, metadata)`` returns
``(label values, value)``, or None when the binding does not apply (its ``when`` says no, or
the value is missing or not a finite number).

``resolve`` is generated source, compiled once per binding (as ``dataclasses`` and
``namedtuple`` do): it runs for every binding of every event, and straight-line code with
no inner calls costs about half of a chain of small closures. Only ``repr``'d strings and
floats from the binding enter the source; functions are passed in as globals.

``LabelCaps`` bounds how many distinct values each label of a metric may take; the rest fold
into "other".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dspex.telemetry._events import Event
from dspex.telemetry.catalog import BINDINGS, METRICS_BY_NAME, Binding, Const, MetricDef

__all__ = ["OTHER", "Compiled", "LabelCaps", "compile_bindings", "label_value", "number"]

OTHER = "other"
#: longer label values are folded: a long value is text (a prompt, an error message), not a name
MAX_LABEL_LENGTH = 100

Resolve = Callable[[Mapping[str, Any], Mapping[str, Any]], "tuple[tuple[str, ...], float] | None"]


def label_value(v: Any) -> str:
    if type(v) is str:
        return v
    if v is None:
        return ""
    if v is True or v is False:
        return "true" if v else "false"
    return str(v)


def number(v: Any) -> float | None:
    """A finite float, or None for anything else (missing, text, bool, nan, inf)."""
    if type(v) is float:
        return v if math.isfinite(v) else None
    if type(v) is int:
        return float(v)
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


@dataclass(frozen=True, slots=True)
class Compiled:
    metric: MetricDef
    resolve: Resolve
    enum_index: int  # index of the state-set label, or -1


def _resolver(metric: MetricDef, b: Binding) -> Resolve:
    env: dict[str, Any] = {"_lv": label_value, "_num": number, "_INF": math.inf, "_NINF": -math.inf}
    lines = ["def resolve(m, md):"]
    if b.when is not None:
        env["_when"] = b.when
        lines.append("    if not _when(m, md): return None")
    if isinstance(b.value, str):
        lines.append(f"    v = m.get({b.value!r})")
    elif isinstance(b.value, int | float):
        lines.append(f"    v = {float(b.value)!r}")
    else:
        env["_value"] = b.value
        lines.append("    v = _value(m, md)")
    lines += [
        "    if type(v) is not float or v != v or v == _INF or v == _NINF:",
        "        v = _num(v)",
        "        if v is None: return None",
    ]
    names = []
    for i, label in enumerate(metric.labels):
        source = b.labels[label]
        if isinstance(source, Const):
            lines.append(f"    l{i} = {source.value!r}")
        else:
            if isinstance(source, str):
                lines.append(f"    l{i} = md.get({source!r})")
            else:
                env[f"_f{i}"] = source
                lines.append(f"    l{i} = _f{i}(m, md)")
            lines.append(f"    if type(l{i}) is not str: l{i} = _lv(l{i})")
        names.append(f"l{i}")
    lines.append(f"    return ({''.join(n + ', ' for n in names)}), v")
    exec(compile("\n".join(lines), f"<dspex binding {metric.name} <- {'.'.join(b.event)}>", "exec"), env)
    fn: Resolve = env["resolve"]
    return fn


def compile_bindings(bindings: Iterable[Binding] = BINDINGS) -> dict[Event, tuple[Compiled, ...]]:
    table: dict[Event, list[Compiled]] = {}
    for b in bindings:
        metric = METRICS_BY_NAME[b.metric]
        if set(b.labels) != set(metric.labels):
            raise ValueError(f"Binding for {b.metric} gives labels {sorted(b.labels)}; the metric has {metric.labels}.")
        enum_index = metric.labels.index(b.enum_label) if b.enum_label else -1
        table.setdefault(b.event, []).append(Compiled(metric, _resolver(metric, b), enum_index))
    return {ev: tuple(cs) for ev, cs in table.items()}


class LabelCaps:
    """Bounds the distinct values of each label of each metric; the rest become "other".

    The first ``max_values`` distinct values of a label are kept (first come, first kept:
    the common values appear early), as are values up to ``MAX_LABEL_LENGTH`` characters.
    ``folded`` counts folded values per metric so an operator can see when the cap bites.
    """

    def __init__(self, max_values: int = 100) -> None:
        if max_values < 1:
            raise ValueError(f"max_values must be at least 1, got {max_values!r}.")
        self.max_values = max_values
        self._seen: dict[tuple[str, int], set[str]] = {}
        self.folded: dict[str, int] = {}

    def cap(self, metric: str, labels: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] | None = None
        for i, v in enumerate(labels):
            seen = self._seen.get((metric, i))
            if seen is None:
                seen = self._seen[(metric, i)] = set()
            if v in seen:
                continue
            if len(seen) < self.max_values and len(v) <= MAX_LABEL_LENGTH:
                seen.add(v)
                continue
            if out is None:
                out = list(labels)
            out[i] = OTHER
            self.folded[metric] = self.folded.get(metric, 0) + 1
        return labels if out is None else tuple(out)
