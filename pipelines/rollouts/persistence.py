"""Where a live rollout controller keeps its rollouts, deployments and pipelines.

The controller writes the rollout's state at every tick, with the actions it has not executed
yet, so a controller that restarts (or another one, or a CLI in another process) picks up at the
same step. ``Persistence`` is the small interface it needs; ``MemoryPersistence`` keeps
everything in a dict (tests, single-process demos) and ``StorePersistence`` puts it in the store
(``dspex.store.deployments``: SQLite or PostgreSQL).

Every rollout write is compare-and-set on a revision: ``expected_revision=0`` creates, ``n``
requires the row to still be at ``n``. Two writers of one rollout (a controller tick and an
operator's ``dspex rollout pause``) never overwrite each other; the loser gets ``StoreError``
with ``conflict=True``, reloads and applies its change again.

A stored rollout document is ``RolloutState.to_dict()`` plus a ``"controller"`` section::

    {"phase": "progressing", ..., "controller": {"pending": [<action dicts>],
                                                 "deployment_id": "dep-...", "error": null}}
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from dspex.errors import NotFound, StoreError, ValidationError

from .actions import Action, EmitTelemetry, action_from_dict
from .gates import NonInferiorityTest
from .state import RolloutState

__all__ = [
    "MemoryPersistence",
    "Persistence",
    "RolloutRecord",
    "StorePersistence",
    "StoredDoc",
]


@dataclass(frozen=True)
class StoredDoc:
    """A stored JSON document and the revision it was read at."""

    doc: dict[str, Any]
    revision: int


@dataclass(frozen=True)
class RolloutRecord:
    """A rollout as the controller persists it: the state, the actions still to execute,
    the deployment record it drives, and the last execution error (shown by ``status``)."""

    state: RolloutState
    revision: int = 0
    pending: tuple[Action, ...] = ()
    deployment_id: str | None = None
    error: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def rollout_id(self) -> str:
        return self.state.rollout_id

    def to_doc(self) -> dict[str, Any]:
        doc = self.state.to_dict()
        doc["controller"] = {
            # telemetry is re-emitted by the next tick anyway; it is not worth a durable record
            "pending": [a.to_dict() for a in self.pending if not isinstance(a, EmitTelemetry)],
            "deployment_id": self.deployment_id,
            "error": self.error,
            **dict(self.extra),
        }
        return doc

    @classmethod
    def from_stored(
        cls, stored: StoredDoc, *, non_inferiority_test: NonInferiorityTest | None = None
    ) -> RolloutRecord:
        doc = stored.doc
        ctl = doc.get("controller") or {}
        if not isinstance(ctl, Mapping):
            raise ValidationError(
                "The stored rollout's 'controller' section is not an object; the row is corrupt.",
                field="controller",
            )
        state = RolloutState.from_dict(doc, non_inferiority_test=non_inferiority_test)
        pending = tuple(action_from_dict(a) for a in ctl.get("pending") or ())
        extra = {k: v for k, v in ctl.items() if k not in ("pending", "deployment_id", "error")}
        dep = ctl.get("deployment_id")
        err = ctl.get("error")
        return cls(
            state=state,
            revision=stored.revision,
            pending=pending,
            deployment_id=None if dep is None else str(dep),
            error=None if err is None else str(err),
            extra=extra,
        )


class Persistence(Protocol):
    """What the controller needs from a store. Documents are the objects' ``to_dict()`` forms."""

    def save_state(self, doc: Mapping[str, Any], *, expected_revision: int | None) -> int:
        """Write a rollout document under its ``rollout_id``; the new revision."""
        ...

    def load_state(self, rollout_id: str) -> StoredDoc:
        """Raises ``NotFound`` when there is no such rollout."""
        ...

    def list_active(self, program: str | None = None) -> list[StoredDoc]:
        """Rollouts not in a terminal phase, most recently updated first."""
        ...

    def latest(self, program: str) -> StoredDoc | None:
        """The program's most recently updated rollout, terminal or not."""
        ...

    def save_deployment(self, doc: Mapping[str, Any]) -> None: ...

    def load_deployment(self, deployment_id: str) -> dict[str, Any]: ...

    def list_deployments(
        self, program: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Newest first."""
        ...

    def save_pipeline(
        self, doc: Mapping[str, Any], *, expected_revision: int | None = None
    ) -> int: ...

    def load_pipeline(self, name: str) -> StoredDoc: ...

    def list_pipelines(self, status: str | None = None) -> list[StoredDoc]: ...


_TERMINAL = frozenset({"succeeded", "failed", "rolled_back", "aborted"})


def _conflict(kind: str, key: str, current: int, expected: int) -> StoreError:
    if expected == 0:
        msg = f"The {kind} {key!r} already exists (revision {current}); load it and update it instead."
    else:
        msg = (
            f"The {kind} {key!r} was changed by another writer (it is at revision {current}, "
            f"you read {expected}); reload it and apply your change again."
        )
    return StoreError(msg, conflict=True, current_revision=current)


def _plain(doc: Mapping[str, Any], kind: str) -> dict[str, Any]:
    """A deep, JSON-checked copy: what a database would hand back, never a shared object."""
    try:
        out: dict[str, Any] = json.loads(json.dumps(dict(doc), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"The {kind} is not JSON: {exc}.", field=kind) from exc
    return out


class MemoryPersistence:
    """Everything in this process's memory, with the store's compare-and-set semantics."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rollouts: dict[
            str, tuple[dict[str, Any], int, int]
        ] = {}  # id -> (doc, revision, write seq)
        self._deployments: dict[str, tuple[dict[str, Any], int]] = {}
        self._pipelines: dict[str, tuple[dict[str, Any], int]] = {}
        self._seq = 0
        self.writes = 0

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def save_state(self, doc: Mapping[str, Any], *, expected_revision: int | None) -> int:
        data = _plain(doc, "rollout state")
        rid = data.get("rollout_id")
        if not isinstance(rid, str) or not rid:
            raise ValidationError("A rollout state needs a rollout_id.", field="rollout_id")
        with self._lock:
            current = self._rollouts.get(rid)
            rev = 0 if current is None else current[1]
            if expected_revision is not None and rev != expected_revision:
                raise _conflict("rollout", rid, rev, expected_revision)
            self._rollouts[rid] = (data, rev + 1, self._next())
            self.writes += 1
            return rev + 1

    def load_state(self, rollout_id: str) -> StoredDoc:
        with self._lock:
            found = self._rollouts.get(rollout_id)
            if found is None:
                raise NotFound(f"No rollout {rollout_id!r} in the store.")
            return StoredDoc(copy.deepcopy(found[0]), found[1])

    def _sorted(self, program: str | None, active: bool | None) -> list[StoredDoc]:
        with self._lock:
            rows = sorted(self._rollouts.values(), key=lambda r: r[2], reverse=True)
            return [
                StoredDoc(copy.deepcopy(doc), rev)
                for doc, rev, _ in rows
                if (program is None or doc.get("program") == program)
                and (active is None or (doc.get("phase") not in _TERMINAL) == active)
            ]

    def list_active(self, program: str | None = None) -> list[StoredDoc]:
        return self._sorted(program, True)

    def latest(self, program: str) -> StoredDoc | None:
        rows = self._sorted(program, None)
        return rows[0] if rows else None

    def save_deployment(self, doc: Mapping[str, Any]) -> None:
        data = _plain(doc, "deployment")
        with self._lock:
            rev = self._deployments.get(str(data["id"]), ({}, 0))[1]
            self._deployments[str(data["id"])] = (data, rev + 1)
            self.writes += 1

    def load_deployment(self, deployment_id: str) -> dict[str, Any]:
        with self._lock:
            found = self._deployments.get(deployment_id)
            if found is None:
                raise NotFound(f"No deployment {deployment_id!r} in the store.")
            return copy.deepcopy(found[0])

    def list_deployments(
        self, program: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        with self._lock:
            docs = [copy.deepcopy(d) for d, _ in self._deployments.values()]
        docs = [d for d in docs if program is None or d.get("program") == program]
        docs.sort(key=lambda d: float(d.get("created_at") or 0.0), reverse=True)
        return docs[:limit]

    def save_pipeline(self, doc: Mapping[str, Any], *, expected_revision: int | None = None) -> int:
        data = _plain(doc, "pipeline")
        name = str(data["name"])
        with self._lock:
            rev = self._pipelines.get(name, ({}, 0))[1]
            if expected_revision is not None and rev != expected_revision:
                raise _conflict("pipeline", name, rev, expected_revision)
            self._pipelines[name] = (data, rev + 1)
            return rev + 1

    def load_pipeline(self, name: str) -> StoredDoc:
        with self._lock:
            found = self._pipelines.get(name)
            if found is None:
                raise NotFound(f"No pipeline {name!r} in the store.")
            return StoredDoc(copy.deepcopy(found[0]), found[1])

    def list_pipelines(self, status: str | None = None) -> list[StoredDoc]:
        with self._lock:
            rows = [StoredDoc(copy.deepcopy(d), r) for d, r in self._pipelines.values()]
        return sorted(
            (r for r in rows if status is None or r.doc.get("status") == status),
            key=lambda r: str(r.doc.get("name")),
        )


class StorePersistence:
    """The store's deployment tables (``dspex.store.deployments.DeploymentStore``)."""

    def __init__(self, store: Any = None) -> None:
        from dspex.store import open_store
        from dspex.store.deployments import DeploymentStore

        self.store = store if store is not None else open_store()
        self.repo = DeploymentStore(self.store)

    def save_state(self, doc: Mapping[str, Any], *, expected_revision: int | None) -> int:
        ctl = doc.get("controller") or {}
        dep = ctl.get("deployment_id") if isinstance(ctl, Mapping) else None
        saved = self.repo.save_rollout(doc, deployment_id=dep, expected_revision=expected_revision)
        return saved.revision

    def load_state(self, rollout_id: str) -> StoredDoc:
        s = self.repo.get_rollout(rollout_id)
        return StoredDoc(s.doc, s.revision)

    def list_active(self, program: str | None = None) -> list[StoredDoc]:
        return [
            StoredDoc(s.doc, s.revision) for s in self.repo.rollouts(program=program, active=True)
        ]

    def latest(self, program: str) -> StoredDoc | None:
        rows = self.repo.rollouts(program=program, limit=1)
        return StoredDoc(rows[0].doc, rows[0].revision) if rows else None

    def save_deployment(self, doc: Mapping[str, Any]) -> None:
        self.repo.save_deployment(doc)

    def load_deployment(self, deployment_id: str) -> dict[str, Any]:
        return self.repo.get_deployment(deployment_id).doc

    def list_deployments(
        self, program: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        return [s.doc for s in self.repo.deployments(program=program, limit=limit)]

    def save_pipeline(self, doc: Mapping[str, Any], *, expected_revision: int | None = None) -> int:
        return self.repo.save_pipeline(doc, expected_revision=expected_revision).revision

    def load_pipeline(self, name: str) -> StoredDoc:
        s = self.repo.get_pipeline(name)
        return StoredDoc(s.doc, s.revision)

    def list_pipelines(self, status: str | None = None) -> list[StoredDoc]:
        return [StoredDoc(s.doc, s.revision) for s in self.repo.pipelines(status=status)]


def load_record(
    persistence: Persistence,
    rollout_id: str,
    *,
    non_inferiority_test: NonInferiorityTest | None = None,
) -> RolloutRecord:
    return RolloutRecord.from_stored(
        persistence.load_state(rollout_id), non_inferiority_test=non_inferiority_test
    )


def active_record(
    persistence: Persistence,
    program: str,
    *,
    non_inferiority_test: NonInferiorityTest | None = None,
) -> RolloutRecord | None:
    rows = persistence.list_active(program)
    if not rows:
        return None
    return RolloutRecord.from_stored(rows[0], non_inferiority_test=non_inferiority_test)


def pending_of(actions: Sequence[Action]) -> tuple[Action, ...]:
    """The actions worth a durable record (telemetry is not)."""
    return tuple(a for a in actions if not isinstance(a, EmitTelemetry))
