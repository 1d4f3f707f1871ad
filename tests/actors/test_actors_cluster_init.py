"""``dspex.cluster.init``'s arguments to ``ray.init`` (pure; joining a running Ray is tested in
test_actors_ray.py)."""

from __future__ import annotations

from dspex.cluster import ray_metrics
from dspex.cluster.runtime import ray_init_kwargs


def test_local_defaults() -> None:
    kw = ray_init_kwargs(num_cpus=2)
    assert kw["include_dashboard"] is False and kw["ignore_reinit_error"] is True
    assert kw["num_cpus"] == 2 and "address" not in kw
    assert kw["runtime_env"] == {"worker_process_setup_hook": ray_metrics.WORKER_SETUP_HOOK}


def test_joining_a_cluster_keeps_the_callers_runtime_env() -> None:
    env = {"env_vars": {"A": "1"}, "worker_process_setup_hook": "mine.hook"}
    kw = ray_init_kwargs("ray://head:10001", num_cpus=8, runtime_env=env, include_dashboard=True, namespace="x")
    assert kw["address"] == "ray://head:10001" and "num_cpus" not in kw  # a cluster has its own CPUs
    assert kw["runtime_env"] == env and kw["namespace"] == "x" and kw["include_dashboard"] is True
    assert env == {"env_vars": {"A": "1"}, "worker_process_setup_hook": "mine.hook"}  # not mutated


def test_without_metrics_no_runtime_env() -> None:
    kw = ray_init_kwargs(ray_metrics=False, object_store_memory=10**8)
    assert "runtime_env" not in kw and kw["object_store_memory"] == 10**8
