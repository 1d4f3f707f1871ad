"""The stored form of an experiment: spec, status, per-arm results, report; and where it lives.

Status is a small pure state machine (the seed's): planned -> running -> completed, with
failed (the run raised) and cancelled (from planned or running). Times come from an injected
clock, so tests drive it without waiting.

``ExperimentArchive`` keeps one JSON document per experiment in a folder (written atomically,
so a crash never leaves half a file). It stands in until the store has an ``experiments``
table; the record's ``to_dict()`` is the row's document either way.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from dspex.errors import ExperimentError, InvalidTransition, NotFound
from dspex.telemetry import emit

__all__ = ["ExperimentArchive", "ExperimentRecord", "RecordSink", "Status", "jsonable"]

Status = Literal["planned", "running", "completed", "failed", "cancelled"]
STATUS_EVENT = ("dspex", "experiment", "status")

_TRANSITIONS: dict[str, tuple[tuple[str, ...], Status]] = {
    "start": (("planned",), "running"),
    "complete": (("running",), "completed"),
    "fail": (("planned", "running"), "failed"),
    "cancel": (("planned", "running"), "cancelled"),
}


@dataclass
class ExperimentRecord:
    name: str
    spec: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: Status = "planned"
    created_s: float = 0.0
    started_s: float | None = None
    finished_s: float | None = None
    #: arm name -> ArmResult.to_dict()
    arms: dict[str, Any] = field(default_factory=dict)
    #: ExperimentResult.to_dict() (statistics, conclusion) once completed
    result: dict[str, Any] | None = None
    error: str | None = None

    def transition(self, event: str, now_s: float, *, error: str | None = None) -> ExperimentRecord:
        """Apply ``event`` (start / complete / fail / cancel) at ``now_s``."""
        if event not in _TRANSITIONS:
            raise ExperimentError(
                f"Unknown experiment event {event!r}; use one of {sorted(_TRANSITIONS)}."
            )
        allowed, target = _TRANSITIONS[event]
        if self.status not in allowed:
            possible = [e for e, (sources, _) in _TRANSITIONS.items() if self.status in sources]
            raise InvalidTransition.of("experiment", self.status, event, possible)
        previous = self.status
        self.status = target
        if event == "start":
            self.started_s = now_s
        else:
            self.finished_s = now_s
        if error is not None:
            self.error = error
        emit(STATUS_EVENT, {"count": 1}, {"experiment": self.name, "from": previous, "to": target})
        return self

    @property
    def duration_s(self) -> float | None:
        if self.started_s is None or self.finished_s is None:
            return None
        return self.finished_s - self.started_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "status": self.status,
            "created_s": self.created_s,
            "started_s": self.started_s,
            "finished_s": self.finished_s,
            "duration_s": self.duration_s,
            "spec": self.spec,
            "arms": self.arms,
            "result": self.result,
            "error": self.error,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentRecord:
        try:
            return cls(
                name=data["name"],
                spec=data["spec"],
                id=data["id"],
                status=data["status"],
                created_s=float(data.get("created_s") or 0.0),
                started_s=data.get("started_s"),
                finished_s=data.get("finished_s"),
                arms=dict(data.get("arms") or {}),
                result=data.get("result"),
                error=data.get("error"),
            )
        except KeyError as exc:
            raise ExperimentError(f"An experiment record lacks the field {exc.args[0]!r}.") from exc


class RecordSink(Protocol):
    """Where the runner saves a record at every step (the archive, or a store table)."""

    def save(self, record: ExperimentRecord) -> Any: ...


class ExperimentArchive:
    """One JSON file per experiment under ``root`` (``<id>.json``)."""

    def __init__(
        self, root: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.root = Path(root)
        self.clock = clock
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ExperimentError(
                f"Cannot create the experiment archive at {self.root}: {exc}."
            ) from exc

    def _path(self, experiment_id: str) -> Path:
        if not experiment_id or not all(c.isalnum() or c in "-_" for c in experiment_id):
            raise ExperimentError(f"{experiment_id!r} is not an experiment id.")
        return self.root / f"{experiment_id}.json"

    def save(self, record: ExperimentRecord) -> Path:
        path = self._path(record.id)
        text = json.dumps(jsonable(record.to_dict()), indent=1, allow_nan=False)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    def load(self, experiment_id: str) -> ExperimentRecord:
        path = self._path(experiment_id)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise NotFound(
                f"No experiment {experiment_id!r} in {self.root}.", kind="experiment"
            ) from None
        except (OSError, ValueError) as exc:
            raise ExperimentError(
                f"Cannot read experiment {experiment_id!r} from {path}: {exc}."
            ) from exc
        return ExperimentRecord.from_dict(data)

    def list(self) -> list[ExperimentRecord]:
        """Every stored experiment, oldest first."""
        records = [
            self.load(p.stem) for p in self.root.glob("*.json") if not p.name.startswith(".")
        ]
        return sorted(records, key=lambda r: (r.created_s, r.id))


def jsonable(value: Any) -> Any:
    """``value`` as strict JSON data: NaN and infinities become None (JSON has neither),
    numpy scalars and tuples become plain values, objects with ``to_dict`` their dicts."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return repr(value)
