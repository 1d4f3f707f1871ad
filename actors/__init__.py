"""dspex on Ray actors (DESIGN.md, "The actors"): the OTP processes of the seed as Ray actors.

| actor | here | what it guarantees |
|---|---|---|
| SignatureCache | ``signature_cache.py``, ``shared_signatures.py`` | a signature compiles once cluster-wide; a local hit never waits on the actor |
| ProviderClient | ``provider_client.py`` (``RemoteLM`` is its proxy) | rate limits and the breaker hold for the whole cluster |
| Predictor | ``predictor.py`` | bounded in-flight work (``Overloaded``), bounded history, metrics, non-blocking execution sinks |
| HotSwapSupervisor | ``supervisor.py`` (+ ``rollout.py``, ``health.py``) | staged traffic shifts with health checks and rollback; a swap drops no request |

Callers use ``ProgramClient`` (``client.py``): it caches the routing table and calls
predictors directly. Every class is plain Python; ``factory.py`` is the one place that makes
them Ray actors, and ``LocalActor`` runs them in-process with the same calls (tests, no Ray).

    import dspex
    from dspex import actors
    from dspex.cluster import init

    init()
    sup = actors.get_supervisor("qa", replicas=2)
    spec = actors.VersionSpec("qa", 1, factory=QA, state=saved_state,
                              lm=actors.RemoteLM("openai/sim-small", api_base=url, rpm=600))
    await sup.deploy.remote(spec)                                  # first version: 100 % at once
    await sup.deploy.remote(spec2, actors.RolloutPlan.staged(step_s=30))   # 5 -> 100 % with checks
    client = actors.ProgramClient("qa")
    prediction = await client.acall(question="...")

Importing this package does not import Ray.
"""

from .client import ProgramClient
from .executions import CallbackSink, Execution, ExecutionLogSink, ExecutionSink, SinkDispatcher
from .factory import (
    get_provider_client,
    get_signature_cache,
    get_supervisor,
    remote_class,
    start_predictor,
)
from .health import HealthPolicy, HealthReport, Verdict, assess
from .local import LocalActor
from .metrics import MetricsView, RollingMetrics
from .pool import PredictorPool
from .predictor import Predictor
from .provider_client import ProviderClient, ProviderConfig, RemoteLM
from .rollout import Phase, RolloutPlan, RolloutState
from .routing import Replica, Route, RoutingTable
from .shared_signatures import compile_shared, compile_shared_sync, warm_program
from .signature_artifacts import SignatureArtifacts
from .signature_cache import SignatureCache, SignatureCacheCore, Strategy
from .spec import VersionId, VersionSpec
from .supervisor import HotSwapSupervisor, Snapshot

__all__ = [
    "CallbackSink",
    "Execution",
    "ExecutionLogSink",
    "ExecutionSink",
    "HealthPolicy",
    "HealthReport",
    "HotSwapSupervisor",
    "LocalActor",
    "MetricsView",
    "Phase",
    "Predictor",
    "PredictorPool",
    "ProgramClient",
    "ProviderClient",
    "ProviderConfig",
    "RemoteLM",
    "Replica",
    "RollingMetrics",
    "RolloutPlan",
    "RolloutState",
    "Route",
    "RoutingTable",
    "SignatureArtifacts",
    "SignatureCache",
    "SignatureCacheCore",
    "SinkDispatcher",
    "Snapshot",
    "Strategy",
    "Verdict",
    "VersionId",
    "VersionSpec",
    "assess",
    "compile_shared",
    "compile_shared_sync",
    "get_provider_client",
    "get_signature_cache",
    "get_supervisor",
    "remote_class",
    "start_predictor",
    "warm_program",
]
