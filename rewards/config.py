"""The one shape of every reward setting: `RewardConfig`.

RL's and alignment's `reward`, RFT's `filter.reward`, the filter phase's `reward` and
every evaluation's `reward` are all a `RewardConfig`:

    reward:
      components: [{name: math, weight: 1.0}, {name: format, weight: 0.2, kwargs: {mode: think}}]
      threshold: 1.0          # a sample is correct when its composite reward >= this
      timeout_s: 30
      workers: 2
      max_failed_fraction: 0.5

A bare name or a list is shorthand for the components (`reward: exact`,
`reward: [exact, {name: format, weight: 0.2}]`). Reward names are resolved when the config
loads, so a typo fails before any rollout.

>>> cfg = RewardConfig.model_validate("exact")
>>> cfg.workers, cfg.components[0].name, cfg.threshold
(2, 'exact', 1.0)
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from posttrain.core.config import Section
from rewards.api import RewardError, check_kwargs
from rewards.resolve import resolve_reward


class RewardSpec(Section):
    name: str = Field(..., description="Registered reward name, 'file.py:fn' or 'pkg.module:fn'.")
    weight: float = 1.0
    kwargs: dict[str, Any] = Field(default_factory=dict)
    on_failure: Literal["exclude", "value"] = "exclude"
    failure_value: float = 0.0


class RewardConfig(Section):
    components: list[RewardSpec] = Field(..., min_length=1, description="Rewards and weights; composite = weighted sum.")
    threshold: float = Field(1.0, description="A sample is correct when its composite reward >= this (RFT keeps it, "
                                              "the filter and the hint scheduler count it as solved).")
    timeout_s: float = Field(30.0, gt=0, description="Per call; a worker past it is killed.")
    workers: int = Field(2, ge=1, description="Reward worker processes.")
    retries: int = Field(1, ge=0, description="Extra attempts after a timeout or crashed worker.")
    max_failed_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Stop the run when a reward fails on more of a batch than this.")
    chunk_size: int | None = Field(None, ge=1, description="Samples per worker message (default: automatic).")
    memory_mb: int = Field(4096, ge=0, description="Address-space limit per worker (0 = none).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, v: Any) -> Any:
        if isinstance(v, str):
            return {"components": [{"name": v}]}
        if isinstance(v, list):
            return {"components": [{"name": c} if isinstance(c, str) else c for c in v]}
        return v

    @field_validator("components")
    @classmethod
    def _resolvable(cls, components: list[RewardSpec]) -> list[RewardSpec]:
        for spec in components:
            try:
                check_kwargs(resolve_reward(spec.name), spec.kwargs)
            except RewardError as e:
                raise ValueError(str(e)) from None
        return components


def default_reward(name: str = "exact", **settings: Any) -> RewardConfig:
    return RewardConfig(components=[RewardSpec(name=name)], **settings)
