"""The store: SQLAlchemy over an SQLite file (embedded default) or PostgreSQL (clusters).

``open_store()`` opens (and migrates) the database; ``Programs`` keeps program versions and
aliases; ``ExecutionLog`` writes the execution log in batches off the hot path. See README.md.
"""

from dspex.store._url import default_url
from dspex.store.engine import Store, open_store
from dspex.store.execlog import ExecutionLog, ExecutionRecord
from dspex.store.deployments import DeploymentStore
from dspex.store.experiments import ExperimentStore
from dspex.store.jobs import JobRecord, JobState, JobStore
from dspex.store.programs import AliasEvent, ProgramInfo, Programs, ProgramVersion

__all__ = [
    "AliasEvent",
    "DeploymentStore",
    "ExecutionLog",
    "ExecutionRecord",
    "ExperimentStore",
    "JobRecord",
    "JobState",
    "JobStore",
    "ProgramInfo",
    "ProgramVersion",
    "Programs",
    "Store",
    "default_url",
    "open_store",
]
