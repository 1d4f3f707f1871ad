"""``StoreArchive``: experiment records in the store's ``experiments`` table.

    runner = ExperimentRunner(archive=StoreArchive())      # the default store
    result = runner.run(spec)
    record = StoreArchive().load(result.experiment_id)

The same interface as the folder-backed ``ExperimentArchive`` (``save`` / ``load`` / ``list``),
so the runner saves the record at every step (planned, running, per-arm results, completed or
failed) and a report can be rendered later from the stored record.
"""

from __future__ import annotations

from typing import Any

from dspex.pipelines.experiments.record import ExperimentRecord, jsonable
from dspex.store import Store, open_store
from dspex.store.experiments import ExperimentStore

__all__ = ["StoreArchive"]


class StoreArchive:
    """Experiment records in a store (default: ``open_store()``)."""

    def __init__(self, store: Store | None = None) -> None:
        self.store = store if store is not None else open_store()
        self.records = ExperimentStore(self.store)

    def save(self, record: ExperimentRecord) -> dict[str, Any]:
        saved: dict[str, Any] = self.records.save(jsonable(record.to_dict()))
        return saved

    def load(self, experiment_id: str) -> ExperimentRecord:
        return ExperimentRecord.from_dict(self.records.get(experiment_id))

    def latest(self, name: str) -> ExperimentRecord:
        return ExperimentRecord.from_dict(self.records.latest(name))

    def list(self, *, name: str | None = None, status: str | None = None) -> list[ExperimentRecord]:
        """Every stored experiment (or those with ``name`` / ``status``), oldest first."""
        return [ExperimentRecord.from_dict(d) for d in self.records.find(name=name, status=status, limit=10_000)]
