"""Shared plumbing of the Ray-actor reward services (judge, reward model).

Ray is imported lazily, here only. Every call has a timeout; an actor that times out
or dies is killed and started again (bounded), and the affected samples are recorded
as failures with the reason.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from rewards.api import RewardError
from rollouts.cluster import RayCluster


def ensure_ray(num_cpus: int | None = None) -> bool:
    """Join the running Ray (a trainer starts it first, with the run's settings), or start
    a local one through the one code path (rollouts.cluster) when used alone (`posttrain
    rewards score`); True if we started it (and must stop it)."""
    return RayCluster(None, num_cpus).owned


class ActorHandle:
    """One Ray actor made by `factory()`, with start/call timeouts and bounded restarts."""

    def __init__(self, name: str, factory: Callable[[], Any], start_timeout_s: float, call_timeout_s: float,
                 retries: int = 1, backoff_s: float = 1.0, num_cpus: int | None = None):
        self.name = name
        self.factory = factory
        self.start_timeout_s = start_timeout_s
        self.call_timeout_s = call_timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.owns_ray = ensure_ray(num_cpus)
        self.actor = None
        self.restarts = 0
        self._start()

    def _start(self) -> None:
        import ray

        self.actor = self.factory()
        try:
            ray.get(self.actor.ready.remote(), timeout=self.start_timeout_s)
        except Exception as e:
            self._kill()
            if isinstance(e, ray.exceptions.GetTimeoutError):
                raise RewardError(f"reward {self.name!r}: actor did not start within {self.start_timeout_s:g}s") from e
            raise RewardError(f"reward {self.name!r}: actor failed to start: {_short(e)}") from e

    def _kill(self) -> None:
        import ray

        if self.actor is not None:
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:
                pass
            self.actor = None

    def call(self, method: str, *args: Any) -> Any:
        """`actor.method(*args)` with a timeout; restarts the actor on timeout or death.

        Raises RuntimeError with the reason once the retries are spent.
        """
        import ray

        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff_s * attempt)
            if self.actor is None:
                try:
                    self.restarts += 1
                    self._start()
                except RewardError as e:
                    last = str(e)
                    continue
            try:
                return ray.get(getattr(self.actor, method).remote(*args), timeout=self.call_timeout_s)
            except ray.exceptions.GetTimeoutError:
                last = f"timeout: no answer within {self.call_timeout_s:g}s (actor killed)"
                self._kill()
            except ray.exceptions.RayActorError as e:
                last = f"actor died: {_short(e)}"
                self._kill()
            except ray.exceptions.RayTaskError as e:
                raise RuntimeError(_short(e.cause if getattr(e, "cause", None) else e)) from None
        tries = f" after {self.retries + 1} attempts" if self.retries else ""
        raise RuntimeError(last + tries)

    def close(self) -> None:
        import ray

        self._kill()
        if self.owns_ray and ray.is_initialized():
            ray.shutdown()
            self.owns_ray = False


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"[:300]
