"""The store's tables, one module per area. A later area (deployments, pipelines,
experiments, jobs) adds ``schema/<area>.py``, imports it here, and ships a migration."""

from dspex.store.schema.base import Base, UTCDateTime, new_id, utcnow
from dspex.store.schema.executions import ExecutionRow
from dspex.store.schema.programs import (
    ProgramAliasEventRow,
    ProgramAliasRow,
    ProgramRow,
    ProgramVersionRow,
    ProgramVersionTagRow,
)
from dspex.store.schema.registry import ModelRow, ProgramModelRow

__all__ = [
    "Base",
    "ExecutionRow",
    "ModelRow",
    "ProgramAliasEventRow",
    "ProgramAliasRow",
    "ProgramModelRow",
    "ProgramRow",
    "ProgramVersionRow",
    "ProgramVersionTagRow",
    "UTCDateTime",
    "new_id",
    "utcnow",
]
