"""Which version serves a request: the ingress's copy of the supervisor's routing table (pure).

A ``RouteSet`` is what an ingress replica routes by: per live version its traffic weight (percent)
and the Serve deployment(s) serving it, stamped with the supervisor's ``epoch``. It comes from
two places and the higher epoch wins: the supervisor's ``watch`` long-poll (fast, ~ms after a
change) and the ingress's ``user_config`` (durable: a restarted ingress replica routes before it
reaches the supervisor, or when the supervisor is gone).

Choosing a version for a request:

1. a pinned version (``X-Dspex-Version`` header): any deployed version, even at 0 %;
2. a sticky key (user / session header): the key hashes (BLAKE2b, the same in every process and
   run, unlike ``hash()``) to a point in [0, 1) that falls into a version's slice of the
   cumulative weights, so one key sees one version while the split holds. Slices follow the
   table's order (oldest version first), so when a canary grows only keys at the boundary move,
   and they move from the old version to the new one, never back;
3. otherwise a uniform random point, which gives the split in expectation.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dspex.errors import DeploymentError, NotFound

__all__ = ["RouteSet", "ServedRoute", "sticky_point"]


@dataclass(frozen=True)
class ServedRoute:
    version: int | str
    weight: float  # percent
    deployments: tuple[str, ...]
    #: the supervisor's predictor id per deployment (a colocated ingress replica asks the
    #: supervisor which version a predictor id stands for, to load one it lacks)
    predictors: tuple[str, ...] = ()


def sticky_point(key: str) -> float:
    """A stable point in [0, 1) for ``key`` (same in every process, host and run)."""
    digest = hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


@dataclass(frozen=True)
class RouteSet:
    program: str
    epoch: int = -1
    routes: tuple[ServedRoute, ...] = ()

    # -- building --------------------------------------------------------------------------
    @classmethod
    def from_table(cls, table: Any) -> RouteSet:
        """From an ``actors.RoutingTable``: a replica's handle names its Serve deployment
        (``ServeVersionHandle.deployment``); a plain predictor counts by its id."""
        routes = []
        for route in table.routes:
            deployments = tuple(
                str(getattr(r.handle, "deployment", None) or r.predictor_id) for r in route.replicas
            )
            predictors = tuple(str(r.predictor_id) for r in route.replicas)
            routes.append(ServedRoute(route.version, float(route.weight), deployments, predictors))
        return cls(table.program, int(table.epoch), tuple(routes))

    @classmethod
    def from_config(cls, program: str, config: Mapping[str, Any] | None) -> RouteSet:
        """From the ingress's ``user_config`` (``to_config``'s shape); empty when absent."""
        if not config or "routes" not in config:
            return cls(program)
        try:
            routes = tuple(
                ServedRoute(
                    r["version"],
                    float(r["weight"]),
                    tuple(str(d) for d in r["deployments"]),
                    tuple(str(p) for p in r.get("predictors") or ()),
                )
                for r in config["routes"]
            )
            return cls(str(config.get("program", program)), int(config["epoch"]), routes)
        except (KeyError, TypeError, ValueError) as exc:
            raise DeploymentError(
                f"The ingress user_config of {program!r} has malformed routes ({exc}); expected "
                "{'epoch': int, 'routes': [{'version', 'weight', 'deployments'}]}."
            ) from exc

    def to_config(self) -> dict[str, Any]:
        return {
            "program": self.program,
            "epoch": self.epoch,
            "routes": [
                {"version": r.version, "weight": r.weight, "deployments": list(r.deployments), "predictors": list(r.predictors)}
                for r in self.routes
            ],
        }

    def newer(self, other: RouteSet) -> RouteSet:
        """The one of the two with the higher epoch (``self`` on a tie)."""
        return other if other.epoch > self.epoch else self

    # -- reading ---------------------------------------------------------------------------
    @property
    def weights(self) -> dict[int | str, float]:
        return {r.version: r.weight for r in self.routes}

    @cached_property
    def _live(self) -> tuple[tuple[ServedRoute, ...], float]:
        # computed once per table (a table serves many requests; it is immutable)
        live = tuple(r for r in self.routes if r.weight > 0 and r.deployments)
        return live, sum(r.weight for r in live)

    def live(self) -> tuple[ServedRoute, ...]:
        return self._live[0]

    def predictor_of(self, deployment: str) -> str | None:
        """The supervisor's predictor id behind ``deployment`` (None when unknown)."""
        for r in self.routes:
            for d, p in zip(r.deployments, r.predictors, strict=False):
                if d == deployment:
                    return p
        return None

    def find(self, version: str | int) -> ServedRoute | None:
        """The deployed version whose id (as text) is ``version``."""
        wanted = str(version)
        for r in self.routes:
            if str(r.version) == wanted and r.deployments:
                return r
        return None

    def choose(self, *, key: str | None = None, pin: str | None = None, rng: random.Random | None = None) -> ServedRoute:
        """The version for one request (see the module docstring)."""
        if pin:
            route = self.find(pin)
            if route is None:
                raise NotFound(
                    f"Version {pin!r} of program {self.program!r} is not deployed "
                    f"(deployed: {[str(r.version) for r in self.routes if r.deployments]}).",
                    hint="Drop the version header to be routed by weight.",
                    version=pin,
                )
            return route
        live, total = self._live
        if not live:
            raise DeploymentError(
                f"Program {self.program!r} has no version taking traffic (routing epoch {self.epoch}).",
                hint="Deploy a version (admin endpoint or the HotSwapSupervisor) and give it a weight.",
                program=self.program,
            )
        if len(live) == 1:
            return live[0]
        point = sticky_point(key) if key else (rng or random).random()
        target = point * total
        for route in live:
            target -= route.weight
            if target < 0:
                return route
        return live[-1]
