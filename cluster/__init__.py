"""The Ray runtime seam: starting or joining Ray (``init``), metrics on the Ray dashboard
(``ray_metrics``). Serve applications, job entrypoints and cluster configs come with the
cluster issue."""

from .runtime import ClusterInfo, init, shutdown

__all__ = ["ClusterInfo", "init", "shutdown"]
