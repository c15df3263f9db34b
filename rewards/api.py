"""The reward plugin API: `@reward(name)` and results that are values or failures.

>>> @reward("shout_demo")
... def shout(completion, sample):
...     return float(completion.isupper())
>>> resolve_reward("shout_demo").fn("HI", {})
1.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

from posttrain.registry import Registry


@dataclass(frozen=True)
class RewardResult:
    """A score or a failure: exactly one of `value` / `error` is set."""

    value: float | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class RewardFn:
    name: str
    fn: Callable[..., Any]
    batched: bool = False


REWARDS: Registry[RewardFn] = Registry("reward")


def reward(name: str, batched: bool = False) -> Callable[[Callable], Callable]:
    """Register `fn(completion, sample) -> float` (or batched: lists in, list out)."""

    def deco(fn: Callable) -> Callable:
        REWARDS.add(name, RewardFn(name, fn, batched))
        return fn

    return deco


def check_value(value: Any) -> RewardResult:
    """Turn whatever a plugin returned into a RewardResult (never a silent 0)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return RewardResult(None, f"wrong type: expected a float, got {type(value).__name__} {value!r:.80}")
    value = float(value)
    if not math.isfinite(value):
        return RewardResult(None, f"non-finite reward {value}")
    return RewardResult(value)


def resolve_reward(name: str) -> RewardFn:
    """A registered name (built-ins are imported on first use)."""
    import rewards.builtin  # noqa: F401  (registers the built-ins)

    return REWARDS.get(name)
