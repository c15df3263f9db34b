"""Start or join a Ray cluster through one code path.

`address=None` starts a local cluster owned by this command (stopped on close);
`address="auto"` or `"ray://..."` joins a running one (left running on close).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator


class RayCluster:
    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 namespace: str = "posttrain", runtime_env: dict[str, Any] | None = None):
        import ray

        self.owned = False
        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = dict(namespace=namespace, logging_level=logging.WARNING,
                                      log_to_driver=os.environ.get("POSTTRAIN_RAY_LOGS", "0") == "1")
        if runtime_env:
            kwargs["runtime_env"] = runtime_env
        if address is None:
            kwargs.update(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False)
        else:
            kwargs["address"] = address
        ray.init(**kwargs)
        self.owned = address is None

    def close(self) -> None:
        import ray

        if self.owned and ray.is_initialized():
            ray.shutdown()
            self.owned = False


def start_ray(ray_cfg: Any, needed: bool) -> RayCluster | None:
    """Start or join Ray once, with a run's `ray` settings (address, num_cpus, namespace), when
    its rollouts or reward services need it; the pool and the services then join this cluster
    instead of starting one with defaults."""
    return RayCluster(ray_cfg.address, ray_cfg.num_cpus, ray_cfg.namespace) if needed else None


@contextmanager
def ray_session(ray_cfg: Any, needed: bool) -> Iterator[RayCluster | None]:
    """`start_ray` for the length of a block: a sampling phase keeps one cluster from its first
    rollout to its last reward, and stops it (when it started it) however the block ends."""
    cluster = start_ray(ray_cfg, needed)
    try:
        yield cluster
    finally:
        if cluster is not None:
            cluster.close()
