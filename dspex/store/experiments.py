"""Experiment records in the store: one row per experiment, rewritten at every step of its run.

The record is ``ExperimentRecord.to_dict()`` of ``dspex.pipelines.experiments`` (a layer above;
``pipelines/experiments/store_archive.py`` plugs this into ``ExperimentRunner(archive=...)``).
Times in the document are epoch seconds (``created_s``, ``started_s``, ``finished_s``); the
table keeps them as UTC datetimes so experiments can be listed by time and status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from dspex.errors import NotFound, ValidationError
from dspex.store.engine import Store
from dspex.store.schema import ExperimentRow

__all__ = ["STATUSES", "ExperimentStore"]

STATUSES = frozenset({"planned", "running", "completed", "failed", "cancelled"})


def _time(value: Any, key: str) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(f"The experiment's {key!r} must be epoch seconds, got {value!r}.", field=key)
    return datetime.fromtimestamp(float(value), UTC)


def _seconds(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def _doc(row: ExperimentRow) -> dict[str, Any]:
    started, finished = _seconds(row.started_at), _seconds(row.finished_at)
    return {
        "id": row.id,
        "name": row.name,
        "status": row.status,
        "created_s": row.created_at.timestamp(),
        "started_s": started,
        "finished_s": finished,
        "duration_s": None if started is None or finished is None else finished - started,
        "spec": dict(row.spec or {}),
        "arms": dict(row.arms or {}),
        "result": None if row.result is None else dict(row.result),
        "error": row.error,
    }


class ExperimentStore:
    """Experiment records (``to_dict()`` form) by id."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def save(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Insert or replace the record with ``record["id"]``; returns the stored form."""
        data = dict(record)
        try:
            json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValidationError(
                f"An experiment record must be strict JSON (no NaN or objects): {exc}. Pass it through "
                "dspex.pipelines.experiments.record.jsonable first.",
                field="record",
            ) from exc
        exp_id, name, status = data.get("id"), data.get("name"), data.get("status")
        if not isinstance(exp_id, str) or not (1 <= len(exp_id) <= 32) or not exp_id.replace("-", "").isalnum():
            raise ValidationError(f"An experiment id is 1-32 letters or digits, got {exp_id!r}.", field="id")
        if not isinstance(name, str) or not name or len(name) > 200:
            raise ValidationError(f"An experiment name is 1-200 characters, got {name!r}.", field="name")
        if status not in STATUSES:
            raise ValidationError(
                f"Experiment status {status!r} is not one of {sorted(STATUSES)}.", field="status"
            )
        for key in ("spec", "arms"):
            if not isinstance(data.get(key) or {}, dict):
                raise ValidationError(f"The experiment's {key!r} must be a JSON object.", field=key)
        result = data.get("result")
        if result is not None and not isinstance(result, dict):
            raise ValidationError("The experiment's 'result' must be a JSON object or None.", field="result")
        created = _time(data.get("created_s") or 0.0, "created_s")
        started = _time(data.get("started_s"), "started_s")
        finished = _time(data.get("finished_s"), "finished_s")

        def fn(s: Session) -> dict[str, Any]:
            row = s.get(ExperimentRow, exp_id)
            if row is None:
                row = ExperimentRow(id=exp_id)
                s.add(row)
            row.name = name
            row.status = status
            row.spec = dict(data.get("spec") or {})
            row.arms = dict(data.get("arms") or {})
            row.result = result
            row.error = data.get("error")
            row.created_at = created  # type: ignore[assignment]  # never None: defaults to 0
            row.started_at = started
            row.finished_at = finished
            s.flush()
            return _doc(row)

        return self.store.write(fn)

    def get(self, experiment_id: str) -> dict[str, Any]:
        def fn(s: Session) -> dict[str, Any]:
            row = s.get(ExperimentRow, experiment_id)
            if row is None:
                raise NotFound(
                    f"No experiment {experiment_id!r} in the store.",
                    hint="List them with `dspex experiments report --list`.",
                    kind="experiment",
                )
            return _doc(row)

        return self.store.read(fn)

    def find(self, *, name: str | None = None, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Oldest first (as ``ExperimentArchive.list``)."""
        q = select(ExperimentRow)
        if name is not None:
            q = q.where(ExperimentRow.name == name)
        if status is not None:
            q = q.where(ExperimentRow.status == status)
        q = q.order_by(ExperimentRow.created_at, ExperimentRow.id).limit(limit)
        return self.store.read(lambda s: [_doc(r) for r in s.scalars(q)])

    def latest(self, name: str) -> dict[str, Any]:
        """The newest experiment named ``name``."""
        q = (
            select(ExperimentRow)
            .where(ExperimentRow.name == name)
            .order_by(ExperimentRow.created_at.desc(), ExperimentRow.id.desc())
            .limit(1)
        )
        found = self.store.read(lambda s: [_doc(r) for r in s.scalars(q)])
        if not found:
            raise NotFound(f"No experiment named {name!r} in the store.", kind="experiment")
        return found[0]

    def delete(self, experiment_id: str) -> None:
        def fn(s: Session) -> None:
            row = s.get(ExperimentRow, experiment_id)
            if row is None:
                raise NotFound(f"No experiment {experiment_id!r} in the store.", kind="experiment")
            s.delete(row)

        self.store.write(fn)
