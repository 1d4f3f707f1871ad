"""RolloutSpec: how a new program version goes live.

Strategies (issue 10, the seed's Stage 4 §2 and Stage 2 §6.2):

* ``immediate``  one step to 100 %.
* ``canary``     traffic moves through ``step_weights`` (default 5, 10, 25, 50, 100), one step per
                 passing analysis every ``interval_s``; ``threshold`` failed checks roll back.
* ``blue_green`` the new version runs at 0 % behind a preview route; ``iterations`` passing
                 pre-promotion analyses, then an instant switch; the old version is kept for
                 ``scale_down_delay_s`` so an abort switches straight back.
* ``rolling``    Serve replaces replicas in place; the rollout watches the gates meanwhile.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from dspex.errors import ValidationError

from . import _serde as s
from .gates import Gate, NonInferiorityGate, NonInferiorityTest, gate_from_dict

__all__ = ["MIN_INTERVAL_S", "WEBHOOK_EVENTS", "CanaryTest", "RolloutSpec", "Strategy", "Webhook"]

#: the shortest analysis interval outside tests: shorter windows hold too few calls to judge
MIN_INTERVAL_S = 10.0
#: with ``allow_short_interval`` (tests, demos against the simulator) the floor is this
TEST_MIN_INTERVAL_S = 0.05

WEBHOOK_EVENTS = (
    "started",
    "step",
    "paused",
    "resumed",
    "promoted",
    "succeeded",
    "rolled_back",
    "failed",
    "aborted",
)


class Strategy(StrEnum):
    IMMEDIATE = "immediate"
    CANARY = "canary"
    BLUE_GREEN = "blue_green"
    ROLLING = "rolling"


def _invalid(field_name: str, message: str, constraint: str) -> ValidationError:
    return ValidationError(
        f"Invalid rollout spec: {message}", field=field_name, constraint=constraint
    )


@dataclass(frozen=True)
class CanaryTest:
    """Before any live traffic: replay the pinned devset ``devset`` through the new version and
    require the program's metric to reach ``min_score`` (the seed's canary_test)."""

    devset: str
    min_score: float
    max_examples: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.devset, str) or not self.devset:
            raise _invalid(
                "canary_test.devset",
                "the canary test needs the name of a pinned devset.",
                "non-empty",
            )
        if not s.finite(float(self.min_score)):
            raise _invalid(
                "canary_test.min_score",
                f"min_score must be finite, got {self.min_score!r}.",
                "finite",
            )
        if self.max_examples is not None and self.max_examples < 1:
            raise _invalid("canary_test.max_examples", "max_examples must be >= 1 or None.", ">= 1")

    def to_dict(self) -> dict[str, Any]:
        return {
            "devset": self.devset,
            "min_score": self.min_score,
            "max_examples": self.max_examples,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CanaryTest:
        d = s.as_mapping("CanaryTest", data)
        return cls(
            devset=s.get_str("CanaryTest", d, "devset"),
            min_score=s.get_float("CanaryTest", d, "min_score"),
            max_examples=s.opt_int("CanaryTest", d, "max_examples"),
        )


@dataclass(frozen=True)
class Webhook:
    """Notified (by the controller, with a JSON payload) on the listed rollout events.

    ``url`` is stored and shown as is, so it must not carry credentials. A URL that is itself a
    secret (Slack / Teams incoming webhooks) goes in ``url_env`` instead: the name of the
    environment variable the controller reads it from. ``secret_env`` names a signing token.
    """

    name: str
    url: str | None = None
    events: tuple[str, ...] = WEBHOOK_EVENTS
    secret_env: str | None = None
    url_env: str | None = None

    def __post_init__(self) -> None:
        if (self.url is None) == (self.url_env is None):
            raise _invalid(
                "webhooks.url",
                f"webhook {self.name!r} needs exactly one of url and url_env.",
                "url xor url_env",
            )
        if self.url is not None:
            parts = urlsplit(self.url)
            if parts.username or parts.password:
                raise _invalid(
                    "webhooks.url",
                    f"webhook {self.name!r} has credentials in its URL; put the URL in url_env "
                    "or the token in secret_env instead.",
                    "no credentials in URL",
                )
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise _invalid(
                    "webhooks.url",
                    f"webhook {self.name!r} needs an http(s) URL, got {self.url!r}.",
                    "http(s) URL",
                )
        object.__setattr__(self, "events", tuple(self.events))
        unknown = [e for e in self.events if e not in WEBHOOK_EVENTS]
        if unknown:
            raise _invalid(
                "webhooks.events",
                f"webhook {self.name!r} lists unknown events {unknown}; known: {', '.join(WEBHOOK_EVENTS)}.",
                "known event",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "url_env": self.url_env,
            "events": list(self.events),
            "secret_env": self.secret_env,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Webhook:
        d = s.as_mapping("Webhook", data)
        url, url_env, secret = d.get("url"), d.get("url_env"), d.get("secret_env")
        return cls(
            name=s.get_str("Webhook", d, "name"),
            url=None if url is None else str(url),
            url_env=None if url_env is None else str(url_env),
            events=tuple(str(e) for e in s.get_list("Webhook", d, "events")),
            secret_env=None if secret is None else str(secret),
        )


@dataclass(frozen=True)
class RolloutSpec:
    strategy: Strategy = Strategy.CANARY
    interval_s: float = 60.0
    step_weights: tuple[float, ...] = (5, 10, 25, 50, 100)
    threshold: int = 2
    progress_deadline_s: float = 600.0
    gates: tuple[Gate, ...] = ()
    webhooks: tuple[Webhook, ...] = ()
    canary_test: CanaryTest | None = None
    iterations: int = 3
    scale_down_delay_s: float = 30.0
    rollback_window: int = 3
    allow_short_interval: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "strategy", Strategy(self.strategy))
        except ValueError:
            raise _invalid(
                "strategy",
                f"unknown strategy {self.strategy!r}; use one of {', '.join(Strategy)}.",
                "strategy",
            ) from None
        for name in ("interval_s", "progress_deadline_s", "scale_down_delay_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise _invalid(
                    name, f"{name} must be a number of seconds, got {value!r}.", "number"
                )
        try:
            object.__setattr__(self, "step_weights", tuple(float(w) for w in self.step_weights))
        except (TypeError, ValueError):
            raise _invalid(
                "step_weights", f"step weights are numbers, got {self.step_weights!r}.", "numbers"
            ) from None
        object.__setattr__(self, "gates", tuple(self.gates))
        object.__setattr__(self, "webhooks", tuple(self.webhooks))
        floor = TEST_MIN_INTERVAL_S if self.allow_short_interval else MIN_INTERVAL_S
        if not (s.finite(float(self.interval_s)) and self.interval_s >= floor):
            raise _invalid(
                "interval_s",
                f"interval_s must be at least {floor:g} s, got {self.interval_s!r} "
                "(shorter windows hold too few calls to judge a version).",
                f">= {floor:g}",
            )
        self._check_weights()
        if (
            isinstance(self.threshold, bool)
            or not isinstance(self.threshold, int)
            or self.threshold < 1
        ):
            raise _invalid(
                "threshold",
                f"threshold (failed checks before rollback) must be an int >= 1, got {self.threshold!r}.",
                ">= 1",
            )
        if not (
            s.finite(float(self.progress_deadline_s))
            and self.progress_deadline_s >= self.interval_s
        ):
            raise _invalid(
                "progress_deadline_s",
                f"progress_deadline_s ({self.progress_deadline_s!r}) must be at least interval_s ({self.interval_s:g}); "
                "otherwise no analysis could ever run before the deadline.",
                ">= interval_s",
            )
        if (
            isinstance(self.iterations, bool)
            or not isinstance(self.iterations, int)
            or self.iterations < 1
        ):
            raise _invalid(
                "iterations", f"iterations must be an int >= 1, got {self.iterations!r}.", ">= 1"
            )
        if not (s.finite(float(self.scale_down_delay_s)) and self.scale_down_delay_s >= 0):
            raise _invalid(
                "scale_down_delay_s",
                f"scale_down_delay_s must be >= 0, got {self.scale_down_delay_s!r}.",
                ">= 0",
            )
        if (
            isinstance(self.rollback_window, bool)
            or not isinstance(self.rollback_window, int)
            or self.rollback_window < 0
        ):
            raise _invalid(
                "rollback_window",
                f"rollback_window must be an int >= 0, got {self.rollback_window!r}.",
                ">= 0",
            )
        for what, items in (("gates", self.gates), ("webhooks", self.webhooks)):
            names = [g.name for g in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise _invalid(
                    what,
                    f"{what} names must be unique; repeated: {', '.join(dupes)}.",
                    "unique names",
                )

    def _check_weights(self) -> None:
        w = self.step_weights
        if self.strategy is not Strategy.CANARY:
            return
        if not w:
            raise _invalid(
                "step_weights", "a canary rollout needs at least one step weight.", "non-empty"
            )
        if any(not (s.finite(x) and 0 < x <= 100) for x in w):
            raise _invalid(
                "step_weights",
                f"step weights are percentages in (0, 100], got {list(w)}.",
                "0 < w <= 100",
            )
        if any(b <= a for a, b in itertools.pairwise(w)):
            raise _invalid(
                "step_weights", f"step weights must increase strictly, got {list(w)}.", "increasing"
            )

    @property
    def shadow_gates(self) -> tuple[NonInferiorityGate, ...]:
        return tuple(g for g in self.gates if isinstance(g, NonInferiorityGate))

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategy": self.strategy.value,
            "interval_s": self.interval_s,
            "step_weights": list(self.step_weights),
            "threshold": self.threshold,
            "progress_deadline_s": self.progress_deadline_s,
            "gates": [g.to_dict() for g in self.gates],
            "webhooks": [h.to_dict() for h in self.webhooks],
            "canary_test": None if self.canary_test is None else self.canary_test.to_dict(),
            "iterations": self.iterations,
            "scale_down_delay_s": self.scale_down_delay_s,
            "rollback_window": self.rollback_window,
            "allow_short_interval": self.allow_short_interval,
        }

    @classmethod
    def from_dict(
        cls, data: Any, *, non_inferiority_test: NonInferiorityTest | None = None
    ) -> RolloutSpec:
        """Load a spec; non-inferiority gates get ``non_inferiority_test`` injected (functions do
        not persist)."""
        d = s.as_mapping("RolloutSpec", data)
        ct = d.get("canary_test")
        return cls(
            strategy=s.get_enum("RolloutSpec", d, "strategy", Strategy),
            interval_s=s.get_float("RolloutSpec", d, "interval_s"),
            step_weights=tuple(float(w) for w in s.get_list("RolloutSpec", d, "step_weights")),
            threshold=s.get_int("RolloutSpec", d, "threshold"),
            progress_deadline_s=s.get_float("RolloutSpec", d, "progress_deadline_s"),
            gates=tuple(
                gate_from_dict(g, non_inferiority_test=non_inferiority_test)
                for g in s.get_list("RolloutSpec", d, "gates")
            ),
            webhooks=tuple(Webhook.from_dict(h) for h in s.get_list("RolloutSpec", d, "webhooks")),
            canary_test=None if ct is None else CanaryTest.from_dict(ct),
            iterations=s.get_int("RolloutSpec", d, "iterations"),
            scale_down_delay_s=s.get_float("RolloutSpec", d, "scale_down_delay_s"),
            rollback_window=s.get_int("RolloutSpec", d, "rollback_window"),
            allow_short_interval=bool(d.get("allow_short_interval", False)),
        )

    def with_gates(self, gates: Sequence[Gate]) -> RolloutSpec:
        return replace(self, gates=tuple(gates))
