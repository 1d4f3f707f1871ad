"""Events a rollout accepts and the actions it asks the live controller to carry out.

``machine.step(state, event, snapshot, now)`` returns ``(new_state, actions)``. The controller
persists the new state, then executes the actions in order (through the HotSwapSupervisor, the
registry and telemetry). Every action is idempotent — setting weights, moving an alias, scaling a
version down — so a controller that crashed between persisting and executing may run them again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dspex import telemetry

from . import _serde as s

__all__ = [
    "Abort",
    "Action",
    "CanaryTestResult",
    "DeployVersion",
    "EmitTelemetry",
    "Event",
    "MoveAlias",
    "NewVersion",
    "NotifyWebhook",
    "Pause",
    "Promote",
    "Resume",
    "Retry",
    "RollingUpdate",
    "RunCanaryTest",
    "ScaleDown",
    "SetWeights",
    "SkipAnalysis",
    "StartShadow",
    "StopShadow",
    "Tick",
    "action_from_dict",
    "event_from_dict",
]


# -- events ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """Base of everything ``step`` accepts. ``name`` is what an InvalidTransition reports."""

    name: ClassVar[str] = "event"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"event": self.name}
        out.update({k: v for k, v in self.__dict__.items()})
        return out


@dataclass(frozen=True)
class Tick(Event):
    """The periodic heartbeat: analyse if an interval has passed, check the deadline, advance."""

    name: ClassVar[str] = "tick"


@dataclass(frozen=True)
class Promote(Event):
    """Manual promotion: one step (``full=False``) or straight to 100 % (``full=True``)."""

    name: ClassVar[str] = "promote"
    full: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.full, bool):
            raise s.bad("Promote", "full", f"must be true or false, got {self.full!r}")


@dataclass(frozen=True)
class Pause(Event):
    name: ClassVar[str] = "pause"
    reason: str = "paused by operator"


@dataclass(frozen=True)
class Resume(Event):
    name: ClassVar[str] = "resume"


@dataclass(frozen=True)
class Abort(Event):
    name: ClassVar[str] = "abort"
    reason: str = "aborted by operator"


@dataclass(frozen=True)
class Retry(Event):
    """Start an aborted, failed or rolled-back rollout again from the beginning."""

    name: ClassVar[str] = "retry"


@dataclass(frozen=True)
class SkipAnalysis(Event):
    """From now on, treat every analysis as passed (the canary test included)."""

    name: ClassVar[str] = "skip_analysis"


@dataclass(frozen=True)
class NewVersion(Event):
    """A newer version replaces the one being rolled out; the rollout restarts from step 0."""

    name: ClassVar[str] = "new_version"
    version: int = 0

    def __post_init__(self) -> None:
        _check_version("NewVersion", self.version)


@dataclass(frozen=True)
class CanaryTestResult(Event):
    """What the controller measured replaying the pinned devset through ``version``.

    ``error`` says the test could not run at all (it then fails the rollout, with that reason).
    """

    name: ClassVar[str] = "canary_test_result"
    version: int = 0
    score: float | None = None
    examples: int = 0
    error: str | None = None

    def __post_init__(self) -> None:
        _check_version("CanaryTestResult", self.version)
        if self.score is not None and (
            isinstance(self.score, bool) or not isinstance(self.score, int | float)
        ):
            raise s.bad(
                "CanaryTestResult", "score", f"must be a number or null, got {self.score!r}"
            )


def _check_version(owner: str, version: object) -> None:
    if isinstance(version, bool) or not isinstance(version, int):
        raise s.bad(owner, "version", f"must be an integer program version, got {version!r}")


_EVENTS: dict[str, type[Event]] = {
    cls.name: cls
    for cls in (
        Tick,
        Promote,
        Pause,
        Resume,
        Abort,
        Retry,
        SkipAnalysis,
        NewVersion,
        CanaryTestResult,
    )
}


def event_from_dict(data: Any) -> Event:
    """Parse an event, e.g. a manual control posted as JSON: ``{"event": "promote", "full": true}``."""
    d = dict(s.as_mapping("Event", data))
    name = d.pop("event", None)
    cls = _EVENTS.get(str(name))
    if cls is None:
        raise s.bad("Event", "event", f"must be one of {', '.join(sorted(_EVENTS))}, got {name!r}")
    try:
        return cls(**d)
    except TypeError as exc:
        raise s.bad("Event", "<fields>", f"do not fit a {name} event ({exc})") from None


# -- actions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    kind: ClassVar[str] = "action"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"action": self.kind}
        for key, value in self.__dict__.items():
            if isinstance(value, Mapping):
                value = {str(k): v for k, v in value.items()}
            elif isinstance(value, tuple):
                value = list(value)
            out[key] = value
        return out


@dataclass(frozen=True)
class DeployVersion(Action):
    """Start replicas of ``version`` with no live traffic (``preview``: reachable on the preview route)."""

    kind: ClassVar[str] = "deploy_version"
    version: int
    preview: bool = False


@dataclass(frozen=True)
class SetWeights(Action):
    """Route live traffic: percent per version, summing to 100."""

    kind: ClassVar[str] = "set_weights"
    weights: Mapping[int, float]


@dataclass(frozen=True)
class RunCanaryTest(Action):
    """Replay the pinned devset through ``version`` and answer with a CanaryTestResult event."""

    kind: ClassVar[str] = "run_canary_test"
    version: int
    devset: str
    min_score: float
    max_examples: int | None = None


@dataclass(frozen=True)
class StartShadow(Action):
    """Mirror live requests of ``champion`` to ``canary`` and record paired scores."""

    kind: ClassVar[str] = "start_shadow"
    champion: int
    canary: int


@dataclass(frozen=True)
class StopShadow(Action):
    kind: ClassVar[str] = "stop_shadow"
    champion: int
    canary: int


@dataclass(frozen=True)
class MoveAlias(Action):
    """Point a registry alias (``champion``, ``canary``) at ``version``; None removes it."""

    kind: ClassVar[str] = "move_alias"
    alias: str
    version: int | None


@dataclass(frozen=True)
class RollingUpdate(Action):
    """Have Serve replace the program's replicas, in place, with ``version``."""

    kind: ClassVar[str] = "rolling_update"
    version: int


@dataclass(frozen=True)
class ScaleDown(Action):
    kind: ClassVar[str] = "scale_down"
    version: int


@dataclass(frozen=True)
class NotifyWebhook(Action):
    """POST ``payload`` to the webhook: to ``url``, or to the URL in environment variable
    ``url_env``; sign with the token in ``secret_env`` when given. Never carries a secret."""

    kind: ClassVar[str] = "notify_webhook"
    webhook: str
    url: str | None
    event: str
    payload: Mapping[str, Any] = field(default_factory=dict)
    url_env: str | None = None
    secret_env: str | None = None


@dataclass(frozen=True)
class EmitTelemetry(Action):
    """A telemetry event; ``emit()`` sends it through ``dspex.telemetry``.

    ``("dspex", "rollout", "tick")`` carries the gauges ``weight`` (canary percent), ``phase``
    (``Phase.code``) and ``failed_checks``; ``("dspex", "rollout", "transition")`` marks a phase
    change (metadata ``from``, ``to``, ``reason``).
    """

    kind: ClassVar[str] = "emit_telemetry"
    event: tuple[str, ...]
    measurements: Mapping[str, float]
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def emit(self) -> None:
        telemetry.emit(self.event, self.measurements, self.metadata)


_ACTIONS: dict[str, type[Action]] = {
    cls.kind: cls
    for cls in (
        DeployVersion,
        SetWeights,
        RunCanaryTest,
        StartShadow,
        StopShadow,
        MoveAlias,
        RollingUpdate,
        ScaleDown,
        NotifyWebhook,
        EmitTelemetry,
    )
}


def action_from_dict(data: Any) -> Action:
    """Parse an action persisted with ``to_dict`` (e.g. the controller's not-yet-executed list)."""
    d = dict(s.as_mapping("Action", data))
    kind = d.pop("action", None)
    cls = _ACTIONS.get(str(kind))
    if cls is None:
        raise s.bad(
            "Action", "action", f"must be one of {', '.join(sorted(_ACTIONS))}, got {kind!r}"
        )
    if cls is SetWeights:
        d["weights"] = {
            v: float(w) for v, w in s.int_keyed("SetWeights", "weights", d.get("weights")).items()
        }
    if cls is EmitTelemetry:
        d["event"] = tuple(s.get_list("EmitTelemetry", d, "event"))
    try:
        return cls(**d)
    except TypeError as exc:
        raise s.bad("Action", "<fields>", f"do not fit a {kind} action ({exc})") from None
