"""Serving a program: the Python API and the builder behind Serve config files.

    from dspex.cluster.serve import deploy_program, ServeOptions
    handle = deploy_program(VersionSpec("qa", 1, factory=QA, lm=lm), options=ServeOptions(route_prefix="/qa"))
    # later versions go through the program's HotSwapSupervisor (or the admin endpoint):
    sup = program_supervisor("qa")
    ray.get(sup.deploy.remote(VersionSpec("qa", 2, ...), RolloutPlan.staged(step_s=30)))

``deploy_program`` starts (or finds) the program's ``HotSwapSupervisor`` with the Serve hooks of
``graph.py`` and deploys the first version through it; the supervisor then creates the Serve
application (named after the program) with the ingress and the version's deployment.

``build_app`` is the ``import_path`` of the config files ``build.py`` writes for ``serve
deploy``: it builds the same application from plain data, and the ingress hands the versions
to a (detached) supervisor, which adopts the running deployments. After that, deploys,
weights and rollbacks go through the supervisor; re-applying the same file with ``serve
deploy`` resets the application to what the file says. The supervisor's first change of a
config-deployed application restarts its deployments once (rolling, graceful): Serve gave
them the config's code version, and from then on the supervisor's stable ones apply.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from dspex.actors.spec import VersionSpec

from dspex.errors import ConfigurationError

from .graph import INGRESS, ServeSpawner, kill_serve_version
from .options import ServeOptions

__all__ = ["build_app", "config_deployment", "delete_program", "deploy_program", "program_supervisor", "register_config_versions"]

log = logging.getLogger("dspex.cluster.serve")


def _supervisor_config(program: str, options: ServeOptions, adopt: dict[str, str] | None = None) -> dict[str, Any]:
    # One supervisor "replica" per version: it stands for the whole Serve deployment, whose
    # replica count Serve's autoscaler owns. No standbys: a retired version's deployment is
    # removed, and a new version gets a fresh deployment.
    return {
        "replicas": 1,
        "max_standby": 0,
        "spawn": ServeSpawner(program, program, options.to_dict(), dict(adopt or {})),
        "kill": kill_serve_version,
    }


def program_supervisor(program: str) -> Any:
    """The program's ``HotSwapSupervisor`` actor handle (it must exist)."""
    from dspex.actors import _ray

    from dspex.errors import NotFound

    handle = _ray.lookup(_ray.supervisor_name(program))
    if handle is None:
        raise NotFound(f"No supervisor runs program {program!r}; deploy it with deploy_program() first.")
    return handle


def deploy_program(
    spec: VersionSpec,
    *,
    options: ServeOptions | None = None,
    plan: Any = None,
    detached: bool = False,
    timeout_s: float = 120.0,
    **supervisor_config: Any,
) -> Any:
    """Serve ``spec`` (a first or a next version of its program) and return a
    ``DeploymentHandle`` to the program's ingress. ``supervisor_config``: the supervisor's
    other settings (``tick_s``, ``drain_timeout_s``, ...), used when it is created here."""
    import ray
    from dspex.actors.factory import get_supervisor
    from ray import serve

    if not isinstance(spec, VersionSpec):
        raise ConfigurationError(f"deploy_program needs a VersionSpec, got {type(spec).__name__}.")
    options = options or ServeOptions()
    config = {**_supervisor_config(spec.program, options), **supervisor_config}
    supervisor = get_supervisor(spec.program, detached=detached, **config)
    ray.get(supervisor.deploy.remote(spec, plan), timeout=timeout_s)
    return serve.get_app_handle(spec.program)


def delete_program(program: str) -> None:
    """Stop serving ``program``: delete its application and stop its supervisor."""
    import ray
    from dspex.actors import _ray
    from dspex.actors.factory import release
    from ray import serve

    supervisor = _ray.lookup(_ray.supervisor_name(program))
    if supervisor is not None:
        ray.kill(supervisor, no_restart=True)
        release(_ray.supervisor_name(program))
    if program in serve.status().applications:
        serve.delete(program)


# -- config files (serve deploy) ---------------------------------------------------------------
def config_deployment(version: Any) -> str:
    """The name a config file's version is deployed (or, colocated, hosted) under."""
    return f"v{version}-cfg"


def build_app(args: Mapping[str, Any]) -> Any:
    """The application of a config file's ``args``:

        {"program": "qa", "versions": [<version config>, ...], "weights": {"1": 100},
         "options": {<ServeOptions fields>}}

    (version configs as in ``specs.py``). The application's name must be the program's."""
    from .graph import as_deployment
    from .ingress import ProgramIngress
    from .specs import spec_from_config
    from .version import VersionReplica

    if not isinstance(args, Mapping) or not args.get("program"):
        raise ConfigurationError("The args of a dspex Serve application need 'program' and 'versions'.")
    program = str(args["program"])
    versions = list(args.get("versions") or [])
    if not versions:
        raise ConfigurationError(f"The config of {program!r} lists no versions; give at least one.")
    options = ServeOptions.from_dict(args.get("options"))
    bound = []
    for cfg in versions:
        spec = spec_from_config(program, cfg)  # fail the build early on a bad version
        if options.colocate_versions:
            continue  # the ingress replicas host the versions themselves (ingress.py)
        bound.append(
            as_deployment(VersionReplica)
            .options(
                name=config_deployment(spec.version),
                max_ongoing_requests=options.max_ongoing_requests,
                max_queued_requests=options.max_queued_requests,
                logging_config=options.logging_config,
                **options.version_deployment_options(),
            )
            .bind(spec, program)
        )
    bootstrap = {"versions": versions, "weights": args.get("weights")}
    ingress = as_deployment(ProgramIngress).options(
        name=INGRESS,
        max_ongoing_requests=options.max_ongoing_requests,
        max_queued_requests=options.max_queued_requests,
        logging_config=options.logging_config,
        **options.ingress_deployment_options(),
    )
    return ingress.bind(program, program, options.to_dict(), *bound, bootstrap=bootstrap)


async def register_config_versions(program: str, app: str, options: ServeOptions, bootstrap: Mapping[str, Any]) -> None:
    """Run by the ingress of a config-deployed application: give the config's versions to the
    program's (detached) supervisor, which adopts their running deployments."""
    from dspex.actors.factory import get_supervisor

    from .specs import spec_from_config

    specs = [spec_from_config(program, cfg) for cfg in bootstrap.get("versions") or []]
    adopt = {str(s.version): config_deployment(s.version) for s in specs}
    try:
        supervisor = get_supervisor(program, detached=True, **_supervisor_config(program, options, adopt))
        status = await supervisor.status.remote()
        if status["versions"]:
            return  # already registered (another ingress replica, or a restart)
        for spec in specs:
            await supervisor.prepare.remote(spec)
        weights = bootstrap.get("weights") or {str(specs[-1].version): 100.0}
        by_text = {str(s.version): s.version for s in specs}
        await supervisor.set_weights.remote({by_text.get(str(v), v): float(w) for v, w in weights.items()})
    except Exception:
        log.exception("could not register the config versions of %s with its supervisor", program)
