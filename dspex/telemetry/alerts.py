"""Alert rules over windowed metrics, with Prometheus' states, notifiers and an evaluator.

A rule compares an expression (one windowed aggregate, or a ratio of two) with a threshold.
Its state moves as Prometheus' alerting rules do:

    inactive --true--> pending --true for `for_s`--> firing --false--> resolved
    pending --false--> inactive          resolved --true--> pending (or firing when for_s == 0)

(with ``for_s == 0`` a true condition goes straight to firing). "No data" is false.
Notifiers hear about firing and resolved transitions. ``AlertManager.evaluate()`` is one
pure step under the injected clock (tests call it directly); ``start()`` runs it every
``interval_s`` (30 s by default) in a daemon thread and ``stop()`` ends it cleanly.
"""

from __future__ import annotations

import logging
import operator
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from dspex.telemetry import names
from dspex.telemetry._events import emit
from dspex.telemetry.memory import MemoryMonitor
from dspex.telemetry.metrics import MetricsStore
from dspex.telemetry.windows import parse_window

__all__ = [
    "Agg",
    "AlertManager",
    "AlertRule",
    "AlertState",
    "AlertStatus",
    "Notifier",
    "Ratio",
    "Transition",
    "default_rules",
]

log = logging.getLogger("dspex.telemetry.alerts")

_COMPARISONS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
    "==": operator.eq,
    "!=": operator.ne,
}
_AGGREGATIONS = frozenset({"count", "sum", "avg", "min", "max", "p50", "p95", "p99", "rate", "current"})


class AlertState(StrEnum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"
    RESOLVED = "resolved"


@dataclass(frozen=True)
class Agg:
    """``aggregation`` of ``metric`` over ``window`` across the series matching ``where``.

    Aggregations: count, sum, avg, min, max, p50, p95, p99 (histograms), rate (sum per second),
    current (the value now, no window: counters summed, gauges the largest).
    """

    metric: str
    aggregation: str
    window: str | float = "5m"
    where: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.aggregation not in _AGGREGATIONS:
            raise ValueError(
                f"Unknown aggregation {self.aggregation!r}; use one of {', '.join(sorted(_AGGREGATIONS))}."
            )
        parse_window(self.window)

    def evaluate(self, store: MetricsStore, now: float) -> float | None:
        if self.aggregation == "current":
            return store.current(self.metric, self.where)
        stats = store.window(self.metric, self.window, self.where, now=now)
        if stats.count == 0:
            return None
        return stats.get(self.aggregation)

    def check(self, store: MetricsStore) -> None:
        defn = store.definition(self.metric)  # KeyError names the unknown metric
        unknown = set(self.where) - set(defn.labels)
        if unknown:
            raise ValueError(f"{self.metric} has labels {defn.labels}; cannot filter on {sorted(unknown)}.")
        if self.aggregation in ("p50", "p95", "p99") and defn.kind != "histogram":
            raise ValueError(f"{self.aggregation} needs a histogram; {self.metric} is a {defn.kind}.")

    def describe(self) -> str:
        where = ",".join(f"{k}={v}" for k, v in self.where.items())
        return f"{self.aggregation}({self.metric}{{{where}}}[{self.window}])"


@dataclass(frozen=True)
class Ratio:
    """``numerator / denominator``; no data while the denominator is below ``min_denominator``."""

    numerator: Agg
    denominator: Agg
    min_denominator: float = 0.0

    def evaluate(self, store: MetricsStore, now: float) -> float | None:
        den = self.denominator.evaluate(store, now)
        if den is None or den == 0 or den < self.min_denominator:
            return None
        num = self.numerator.evaluate(store, now)
        return (num or 0.0) / den

    def check(self, store: MetricsStore) -> None:
        self.numerator.check(store)
        self.denominator.check(store)

    def describe(self) -> str:
        return f"{self.numerator.describe()} / {self.denominator.describe()}"


@dataclass(frozen=True)
class AlertRule:
    name: str
    expr: Agg | Ratio
    comparison: str
    threshold: float
    for_s: float = 0.0
    severity: str = "warning"
    summary: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("An alert rule needs a name.")
        if self.comparison not in _COMPARISONS:
            raise ValueError(f"Unknown comparison {self.comparison!r}; use one of {' '.join(_COMPARISONS)}.")
        if self.for_s < 0:
            raise ValueError(f"for_s must not be negative, got {self.for_s!r}.")

    def holds(self, value: float | None) -> bool:
        return value is not None and _COMPARISONS[self.comparison](value, self.threshold)


@dataclass
class AlertStatus:
    """The live state of one rule."""

    rule: AlertRule
    state: AlertState = AlertState.INACTIVE
    value: float | None = None
    active_since: float | None = None  # when the condition became true (pending or firing)
    fired_at: float | None = None
    resolved_at: float | None = None
    evaluated_at: float | None = None


@dataclass(frozen=True)
class Transition:
    """A state change of one rule, as notifiers receive it."""

    rule: str
    previous: AlertState
    state: AlertState
    value: float | None
    threshold: float
    at: float
    severity: str
    summary: str
    expression: str
    active_since: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "previous": self.previous.value,
            "state": self.state.value,
            "value": self.value,
            "threshold": self.threshold,
            "at": self.at,
            "severity": self.severity,
            "summary": self.summary,
            "expression": self.expression,
            "active_since": self.active_since,
        }


class Notifier(Protocol):
    def notify(self, transitions: Sequence[Transition]) -> None: ...


def default_rules(
    *,
    error_rate: float = 0.05,
    error_window: str = "5m",
    error_for_s: float = 300.0,
    min_calls: float = 10,
    p95_latency_s: float = 30.0,
    latency_window: str = "5m",
    latency_for_s: float = 300.0,
    cost_budget_usd_per_hour: float = 10.0,
) -> list[AlertRule]:
    """The seed's defaults: LM error rate over 5 % for 5 m, p95 LM latency over a bound for
    5 m, and cost over the last hour above a budget."""
    calls = "dspex_lm_calls_total"
    return [
        AlertRule(
            "dspex_high_error_rate",
            Ratio(Agg(calls, "sum", error_window, {"outcome": "!ok"}), Agg(calls, "sum", error_window), min_calls),
            ">",
            error_rate,
            for_s=error_for_s,
            severity="critical",
            summary=f"More than {error_rate:.0%} of LM calls failed over {error_window}.",
        ),
        AlertRule(
            "dspex_high_p95_latency",
            Agg("dspex_lm_call_duration_seconds", "p95", latency_window, {"cache": "miss"}),
            ">",
            p95_latency_s,
            for_s=latency_for_s,
            summary=f"p95 LM call latency above {p95_latency_s:g} s over {latency_window}.",
        ),
        AlertRule(
            "dspex_cost_over_budget",
            Agg("dspex_cost_usd_total", "sum", "1h"),
            ">",
            cost_budget_usd_per_hour,
            summary=f"LM spend over the last hour above ${cost_budget_usd_per_hour:g}.",
        ),
    ]


class AlertManager:
    """Evaluates rules against a store and tells notifiers about firing and resolved alerts."""

    def __init__(
        self,
        store: MetricsStore,
        rules: Iterable[AlertRule],
        notifiers: Iterable[Notifier] = (),
        *,
        interval_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        memory_monitor: MemoryMonitor | None = None,
    ) -> None:
        if interval_s <= 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}.")
        self.store = store
        self.notifiers = list(notifiers)
        self.interval_s = interval_s
        self.clock = clock
        self.memory_monitor = memory_monitor
        self._status: dict[str, AlertStatus] = {}
        self._lock = threading.Lock()
        for rule in rules:
            self.add_rule(rule)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def add_rule(self, rule: AlertRule) -> None:
        rule.expr.check(self.store)
        with self._lock:  # the loop may be evaluating
            if rule.name in self._status:
                raise ValueError(f"An alert rule named {rule.name!r} exists already; names are unique.")
            self._status[rule.name] = AlertStatus(rule)

    @property
    def alerts(self) -> dict[str, AlertStatus]:
        return dict(self._status)

    def state(self, name: str) -> AlertState:
        return self._status[name].state

    # -- one step -------------------------------------------------------------------------------
    def evaluate(self, now: float | None = None) -> list[Transition]:
        """Evaluate every rule once; notify and return the transitions."""
        t = self.clock() if now is None else now
        with self._lock:
            transitions = [tr for st in self._status.values() if (tr := self._step(st, t)) is not None]
        for tr in transitions:
            measurements = {"threshold": tr.threshold}
            if tr.value is not None:
                measurements["value"] = tr.value
            emit(
                names.ALERT_TRANSITION,
                measurements,
                {"rule": tr.rule, "from": tr.previous.value, "to": tr.state.value, "severity": tr.severity},
            )
        loud = [tr for tr in transitions if tr.state in (AlertState.FIRING, AlertState.RESOLVED)]
        if loud:
            for notifier in self.notifiers:
                try:
                    notifier.notify(loud)
                except Exception:  # a broken notifier must not stop the others or the loop
                    log.warning("alert notifier %s failed", type(notifier).__name__, exc_info=True)
        return transitions

    def _step(self, st: AlertStatus, now: float) -> Transition | None:
        rule = st.rule
        try:
            value = rule.expr.evaluate(self.store, now)
        except Exception:
            log.warning("alert rule %r could not be evaluated", rule.name, exc_info=True)
            value = None
        st.value, st.evaluated_at = value, now
        holds = rule.holds(value)
        prev = st.state
        if holds:
            if prev in (AlertState.INACTIVE, AlertState.RESOLVED):
                st.active_since = now
                new = AlertState.FIRING if rule.for_s == 0 else AlertState.PENDING
            elif prev is AlertState.PENDING and st.active_since is not None and now - st.active_since >= rule.for_s:
                new = AlertState.FIRING
            else:
                new = prev
        else:
            new = {AlertState.FIRING: AlertState.RESOLVED, AlertState.PENDING: AlertState.INACTIVE}.get(prev, prev)
            if new is AlertState.INACTIVE:
                st.active_since = None  # a resolved alert keeps it: notifiers report when it began
        if new is prev:
            return None
        st.state = new
        if new is AlertState.FIRING:
            st.fired_at = now
        elif new is AlertState.RESOLVED:
            st.resolved_at = now
        return Transition(
            rule.name, prev, new, value, rule.threshold, now, rule.severity, rule.summary,
            rule.expr.describe(), st.active_since,
        )

    # -- the background loop --------------------------------------------------------------------
    def tick(self) -> list[Transition]:
        """One round of the loop: the memory check (if any), then the rules. Never raises."""
        try:
            if self.memory_monitor is not None:
                self.memory_monitor.check()
            return self.evaluate()
        except Exception:
            log.warning("alert evaluation failed", exc_info=True)
            return []

    def start(self) -> AlertManager:
        """Evaluate every ``interval_s`` in a daemon thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stop.clear()
        for notifier in self.notifiers:
            reopen = getattr(notifier, "open", None)  # undo the close() of an earlier stop()
            if callable(reopen):
                reopen()
        self._thread = threading.Thread(target=self._run, name="dspex-alerts", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.tick()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the loop and wait for an evaluation in progress to finish."""
        self._stop.set()
        for notifier in self.notifiers:
            close = getattr(notifier, "close", None)
            if callable(close):
                close()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> AlertManager:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
