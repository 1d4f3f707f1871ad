"""Deployment pipelines, deployments and rollout states in the store (issue 10).

The rollout objects live in ``dspex.pipelines.rollouts`` (a layer above the store), so the
repository takes and returns their JSON forms (``to_dict()``) and reads from them the columns
a controller filters on. A rollout controller persists its state after every tick::

    repo = DeploymentStore(open_store())
    saved = repo.save_rollout(state.to_dict(), deployment_id=dep.id, expected_revision=rev)
    ...
    current = repo.active_rollout("qa")             # after a restart
    state = RolloutState.from_dict(current.doc)

``expected_revision`` is compare-and-set: 0 means "create, it must not exist", n means "the
row must still be at revision n" (what the caller read), None overwrites unconditionally. A
stale write raises ``StoreError`` with ``conflict=True`` and changes nothing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from dspex.errors import NotFound, StoreError, ValidationError
from dspex.store.engine import Store
from dspex.store.schema import DeploymentPipelineRow, DeploymentRow, RolloutStateRow, utcnow

__all__ = ["TERMINAL_PHASES", "DeploymentStore", "Stored"]

#: rollout phases after which nothing moves (``Phase.terminal`` in pipelines/rollouts/state.py)
TERMINAL_PHASES = frozenset({"succeeded", "failed", "rolled_back", "aborted"})

Row = TypeVar("Row", DeploymentPipelineRow, DeploymentRow, RolloutStateRow)


@dataclass(frozen=True)
class Stored:
    """A stored document: its key, the JSON form, and the row's revision and times."""

    key: str
    doc: dict[str, Any]
    revision: int
    created_at: datetime
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "revision": self.revision,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
            "doc": self.doc,
        }


def _json(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    if not isinstance(doc, Mapping):
        raise ValidationError(f"A {kind} is stored as its to_dict() form, got {type(doc).__name__}.", field=kind)
    data = dict(doc)
    try:
        json.dumps(data, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError(f"The {kind} is not JSON (or holds NaN / infinity): {exc}.", field=kind) from exc
    return data


def _str(kind: str, doc: Mapping[str, Any], key: str, *, optional: bool = False) -> str | None:
    value = doc.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationError(f"The {kind} has no {key!r} (a non-empty string); got {value!r}.", field=key)
    return value


def _int(kind: str, doc: Mapping[str, Any], key: str, *, optional: bool = False, default: int | None = None) -> int | None:
    value = doc.get(key, default)
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"The {kind}'s {key!r} must be an integer, got {value!r}.", field=key)
    return value


def _float(kind: str, doc: Mapping[str, Any], key: str, default: float) -> float:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValidationError(f"The {kind}'s {key!r} must be a finite number, got {value!r}.", field=key)
    return float(value)


def _stored(key: str, row: DeploymentPipelineRow | DeploymentRow | RolloutStateRow) -> Stored:
    return Stored(key, dict(row.doc), row.revision, row.created_at, row.updated_at)


def _check_revision(kind: str, key: str, row: Any, expected: int | None) -> None:
    if expected is None:
        return
    current = 0 if row is None else int(row.revision)
    if current != expected:
        if expected == 0:
            msg = f"The {kind} {key!r} already exists (revision {current}); load it and update it instead."
        elif row is None:
            msg = f"The {kind} {key!r} does not exist (it was deleted?); create it with expected_revision=0."
        else:
            msg = (
                f"The {kind} {key!r} was changed by another writer (it is at revision {current}, "
                f"you read {expected}); reload it and apply your change again."
            )
        raise StoreError(msg, conflict=True, current_revision=current)


class DeploymentStore:
    """Pipelines (by name), deployments (by id) and rollout states (by rollout id)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _upsert(
        self, model: type[Row], kind: str, key_col: str, key: str, values: dict[str, Any], expected: int | None
    ) -> Stored:
        def fn(s: Session) -> Stored:
            col = getattr(model, key_col)
            row = s.scalars(select(model).where(col == key).with_for_update()).first()
            _check_revision(kind, key, row, expected)
            now = utcnow()
            if row is None:
                row = model(**{key_col: key}, created_at=now, revision=0)
                s.add(row)
            for name, value in values.items():
                setattr(row, name, value)
            row.revision = int(row.revision or 0) + 1
            row.updated_at = now
            s.flush()
            return _stored(key, row)

        return self.store.write(fn)

    def _get(self, model: type[Row], kind: str, key_col: str, key: str) -> Stored:
        def fn(s: Session) -> Stored:
            row = s.scalars(select(model).where(getattr(model, key_col) == key)).first()
            if row is None:
                raise NotFound(f"No {kind} {key!r} in the store.")
            return _stored(key, row)

        return self.store.read(fn)

    # -- pipelines -----------------------------------------------------------------------------
    def save_pipeline(self, doc: Mapping[str, Any], *, expected_revision: int | None = None) -> Stored:
        """Save ``DeploymentPipeline.to_dict()`` under its name."""
        data = _json("pipeline", doc)
        name = _str("pipeline", data, "name")
        assert name is not None
        values = {"program": _str("pipeline", data, "program"), "status": _str("pipeline", data, "status"), "doc": data}
        return self._upsert(DeploymentPipelineRow, "pipeline", "name", name, values, expected_revision)

    def get_pipeline(self, name: str) -> Stored:
        return self._get(DeploymentPipelineRow, "pipeline", "name", name)

    def pipelines(self, *, program: str | None = None, status: str | None = None) -> list[Stored]:
        q = select(DeploymentPipelineRow)
        if program is not None:
            q = q.where(DeploymentPipelineRow.program == program)
        if status is not None:
            q = q.where(DeploymentPipelineRow.status == status)
        q = q.order_by(DeploymentPipelineRow.name)
        return self.store.read(lambda s: [_stored(r.name, r) for r in s.scalars(q)])

    def delete_pipeline(self, name: str) -> None:
        def fn(s: Session) -> None:
            row = s.scalars(select(DeploymentPipelineRow).where(DeploymentPipelineRow.name == name)).first()
            if row is None:
                raise NotFound(f"No pipeline {name!r} in the store.")
            s.delete(row)

        self.store.write(fn)

    # -- deployments ---------------------------------------------------------------------------
    def save_deployment(self, doc: Mapping[str, Any], *, expected_revision: int | None = None) -> Stored:
        """Save ``Deployment.to_dict()`` under its id."""
        data = _json("deployment", doc)
        dep_id = _str("deployment", data, "id")
        assert dep_id is not None
        if len(dep_id) > 200:
            raise ValidationError(f"A deployment id has at most 200 characters, got {len(dep_id)}.", field="id")
        values = {
            "program": _str("deployment", data, "program"),
            "version": _int("deployment", data, "version"),
            "pipeline": _str("deployment", data, "pipeline", optional=True),
            "status": _str("deployment", data, "status"),
            "step_index": _int("deployment", data, "step_index", default=-1),
            "weight": _float("deployment", data, "weight", 0.0),
            "doc": data,
        }
        return self._upsert(DeploymentRow, "deployment", "id", dep_id, values, expected_revision)

    def get_deployment(self, deployment_id: str) -> Stored:
        return self._get(DeploymentRow, "deployment", "id", deployment_id)

    def deployments(
        self,
        *,
        program: str | None = None,
        status: str | None = None,
        pipeline: str | None = None,
        limit: int = 100,
    ) -> list[Stored]:
        """Newest first."""
        q = select(DeploymentRow)
        if program is not None:
            q = q.where(DeploymentRow.program == program)
        if status is not None:
            q = q.where(DeploymentRow.status == status)
        if pipeline is not None:
            q = q.where(DeploymentRow.pipeline == pipeline)
        q = q.order_by(DeploymentRow.created_at.desc(), DeploymentRow.id).limit(limit)
        return self.store.read(lambda s: [_stored(r.id, r) for r in s.scalars(q)])

    # -- rollout states ------------------------------------------------------------------------
    def save_rollout(
        self,
        doc: Mapping[str, Any],
        *,
        deployment_id: str | None = None,
        expected_revision: int | None = None,
    ) -> Stored:
        """Save ``RolloutState.to_dict()`` under its ``rollout_id`` (call it at every tick)."""
        data = _json("rollout state", doc)
        rollout_id = _str("rollout state", data, "rollout_id")
        assert rollout_id is not None
        if len(rollout_id) > 255:
            raise ValidationError(f"A rollout id has at most 255 characters, got {len(rollout_id)}.", field="rollout_id")
        phase = _str("rollout state", data, "phase")
        values: dict[str, Any] = {
            "program": _str("rollout state", data, "program"),
            "canary": _int("rollout state", data, "canary"),
            "champion": _int("rollout state", data, "champion", optional=True),
            "phase": phase,
            "terminal": phase in TERMINAL_PHASES,
            "step_index": _int("rollout state", data, "step_index", default=-1),
            "weight": _float("rollout state", data, "weight", 0.0),
            "failed_checks": _int("rollout state", data, "failed_checks", default=0),
            "doc": data,
        }
        if deployment_id is not None:
            values["deployment_id"] = deployment_id
        return self._upsert(RolloutStateRow, "rollout", "rollout_id", rollout_id, values, expected_revision)

    def get_rollout(self, rollout_id: str) -> Stored:
        return self._get(RolloutStateRow, "rollout", "rollout_id", rollout_id)

    def rollout_deployment_id(self, rollout_id: str) -> str | None:
        def fn(s: Session) -> str | None:
            row = s.get(RolloutStateRow, rollout_id)
            if row is None:
                raise NotFound(f"No rollout {rollout_id!r} in the store.")
            return row.deployment_id

        return self.store.read(fn)

    def active_rollout(self, program: str) -> Stored | None:
        """The program's newest rollout that has not reached a terminal phase, if any."""
        q = (
            select(RolloutStateRow)
            .where(RolloutStateRow.program == program, RolloutStateRow.terminal.is_(False))
            .order_by(RolloutStateRow.updated_at.desc())
            .limit(1)
        )
        return self.store.read(lambda s: next((_stored(r.rollout_id, r) for r in s.scalars(q)), None))

    def rollouts(self, *, program: str | None = None, active: bool | None = None, limit: int = 100) -> list[Stored]:
        """Most recently updated first."""
        q = select(RolloutStateRow)
        if program is not None:
            q = q.where(RolloutStateRow.program == program)
        if active is not None:
            q = q.where(RolloutStateRow.terminal.is_(not active))
        q = q.order_by(RolloutStateRow.updated_at.desc()).limit(limit)
        return self.store.read(lambda s: [_stored(r.rollout_id, r) for r in s.scalars(q)])
