"""Start or join a Ray cluster through one code path.

`address=None` starts a local cluster owned by this command (stopped on close);
`address="auto"` or `"ray://..."` joins a running one (left running on close).
"""

from __future__ import annotations

import logging
import os
from typing import Any


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
