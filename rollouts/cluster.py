"""Start or join a Ray cluster through one code path.

`address=None` starts a local cluster owned by this command (stopped on close);
`address="auto"` or `"ray://..."` joins a running one (left running on close).

A local cluster runs its workers (engine actors, trainer workers) at the driver's priority
(`worker_niceness`, default 0). Ray's own default is 15: its workers then yield the CPU to
every other process, which on a shared machine or a laptop starves the engines (an engine
actor at 15 beside a trainer at 0 gets about 1/30 of a contended core), and an overlapped
generation (`rollout.max_staleness: 1`) waits for the update instead of running beside it.
A joined cluster keeps the setting it was started with (`RAY_worker_niceness` of `ray start`).
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator


NICENESS_ENV = "RAY_worker_niceness"


class RayCluster:
    def __init__(self, address: str | None = None, num_cpus: int | None = None,
                 namespace: str = "posttrain", runtime_env: dict[str, Any] | None = None,
                 worker_niceness: int = 0):
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
        saved = os.environ.get(NICENESS_ENV)
        if address is None:  # read by the raylet this call spawns; not left in our environment
            os.environ[NICENESS_ENV] = str(worker_niceness)
        try:
            ray.init(**kwargs)
        finally:
            if address is None:
                if saved is None:
                    os.environ.pop(NICENESS_ENV, None)
                else:
                    os.environ[NICENESS_ENV] = saved
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
    if not needed:
        return None
    return RayCluster(ray_cfg.address, ray_cfg.num_cpus, ray_cfg.namespace,
                      worker_niceness=getattr(ray_cfg, "worker_niceness", 0))


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
