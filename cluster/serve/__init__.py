"""dspex programs on Ray Serve (DESIGN.md, "The cluster seam"; issue 9).

One Serve application per program: an ingress deployment (FastAPI, ``ingress.py``) and one
deployment per live program version, each of whose replicas hosts the actor layer's
``Predictor`` in-process (``version.py``). The program's ``HotSwapSupervisor`` owns versions,
weights, staged rollouts and rollback; the application follows it (``graph.py`` describes the
link: topology through ``serve.run`` with stable code versions, weights through a long-poll
and the ingress's ``user_config``). Serve 2.x has no weighted split and no automatic
rollback; this package adds both without leaving Serve.

    from dspex.cluster.serve import ServeOptions, deploy_program, program_supervisor
    handle = deploy_program(VersionSpec("qa", 1, factory=QA, lm=lm))
    ray.get(program_supervisor("qa").set_weights.remote({1: 90, 2: 10}))

``build.py`` writes a Serve config file for ``serve deploy`` (``dspex serve build``).
Importing this package does not import Ray; ``ingress`` and ``version`` do.
"""

from .admin import admin_denial, token_sha256
from .app import build_app, delete_program, deploy_program, program_supervisor
from .graph import AppGraph, ServeSpawner, ServeVersionHandle, kill_serve_version
from .http_errors import HttpError, http_error
from .options import ADMIN_TOKEN_ENV, ServeOptions
from .routes import RouteSet, ServedRoute, sticky_point
from .specs import plan_from_config, spec_from_config

__all__ = [
    "ADMIN_TOKEN_ENV",
    "AppGraph",
    "HttpError",
    "RouteSet",
    "ServeOptions",
    "ServeSpawner",
    "ServeVersionHandle",
    "ServedRoute",
    "admin_denial",
    "build_app",
    "delete_program",
    "deploy_program",
    "http_error",
    "kill_serve_version",
    "plan_from_config",
    "program_supervisor",
    "spec_from_config",
    "sticky_point",
    "token_sha256",
]
