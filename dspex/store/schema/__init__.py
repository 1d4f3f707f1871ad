"""The store's tables, one module per area. A later area (deployments, pipelines,
experiments, jobs) adds ``schema/<area>.py``, imports it here, and ships a migration."""

from dspex.store.schema.base import Base, UTCDateTime, new_id, utcnow
from dspex.store.schema.deployments import DeploymentPipelineRow, DeploymentRow, RolloutStateRow
from dspex.store.schema.executions import ExecutionRow
from dspex.store.schema.experiments import ExperimentRow
from dspex.store.schema.jobs import JobAttemptRow, JobRow, JobScheduleRow
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
    "DeploymentPipelineRow",
    "DeploymentRow",
    "ExecutionRow",
    "ExperimentRow",
    "JobAttemptRow",
    "JobRow",
    "JobScheduleRow",
    "ModelRow",
    "ProgramAliasEventRow",
    "ProgramAliasRow",
    "ProgramModelRow",
    "ProgramRow",
    "ProgramVersionRow",
    "ProgramVersionTagRow",
    "RolloutStateRow",
    "UTCDateTime",
    "new_id",
    "utcnow",
]
