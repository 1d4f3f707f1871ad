"""The routing table a supervisor publishes and callers cache.

A ``RoutingTable`` is immutable and versioned by ``epoch`` (it only grows). It lists, per
program version, the traffic weight in percent and the replicas (predictor id and actor
handle) serving it. Callers keep the latest table and pick a version by weight and a replica
by load themselves, so a request costs no supervisor round-trip; they learn of a new table by
long-polling the supervisor (``watch``), and at once when a predictor refuses a call as
moved or draining.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dspex.errors import DeploymentError, ValidationError

from .spec import VersionId

__all__ = ["Replica", "Route", "RoutingTable", "check_weights"]


@dataclass(frozen=True)
class Replica:
    predictor_id: str
    handle: Any = field(compare=False, repr=False)


@dataclass(frozen=True)
class Route:
    version: VersionId
    weight: float  # percent, 0..100
    replicas: tuple[Replica, ...]


@dataclass(frozen=True)
class RoutingTable:
    program: str
    epoch: int
    routes: tuple[Route, ...] = ()

    @property
    def weights(self) -> dict[VersionId, float]:
        return {r.version: r.weight for r in self.routes}

    def live_routes(self) -> tuple[Route, ...]:
        return tuple(r for r in self.routes if r.weight > 0 and r.replicas)

    def choose_version(self, rng: random.Random) -> Route:
        """A version drawn by weight. Raises ``DeploymentError`` when nothing takes traffic."""
        live = self.live_routes()
        if not live:
            raise DeploymentError(
                f"Program {self.program!r} has no version taking traffic (routing table epoch {self.epoch}); "
                "deploy a version with the HotSwapSupervisor first."
            )
        if len(live) == 1:
            return live[0]
        x = rng.random() * sum(r.weight for r in live)
        for route in live:
            x -= route.weight
            if x < 0:
                return route
        return live[-1]

    def describe(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "epoch": self.epoch,
            "routes": [
                {"version": r.version, "weight": r.weight, "replicas": [p.predictor_id for p in r.replicas]}
                for r in self.routes
            ],
        }


def check_weights(weights: Mapping[VersionId, float], known: set[VersionId] | None = None) -> dict[VersionId, float]:
    """Validate a traffic split: percents in [0, 100] summing to 100 (within 1e-6)."""
    if not weights:
        raise ValidationError("A traffic split needs at least one version.", field="weights", constraint="non-empty")
    out: dict[VersionId, float] = {}
    for version, weight in weights.items():
        w = float(weight)
        if not 0.0 <= w <= 100.0:
            raise ValidationError(
                f"The weight of version {version!r} is {weight}; weights are percents in [0, 100].",
                field="weights",
                constraint="0 <= weight <= 100",
            )
        if known is not None and version not in known:
            raise ValidationError(
                f"Version {version!r} is not deployed (deployed: {sorted(map(str, known))}); deploy it first.",
                field="weights",
                constraint="deployed version",
            )
        out[version] = w
    total = sum(out.values())
    if abs(total - 100.0) > 1e-6:
        raise ValidationError(
            f"A traffic split must sum to 100 %, got {total:g} % ({out}).", field="weights", constraint="sum == 100"
        )
    return out
