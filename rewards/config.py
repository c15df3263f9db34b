"""The `reward:` section of a training config.

    reward:
      components: [{name: math, weight: 1.0}, {name: format, weight: 0.2, kwargs: {mode: think}}]
      timeout_s: 30
      workers: 2
      max_failed_fraction: 0.5

Reward names are resolved when the config loads, so a typo fails before any rollout.

>>> cfg = RewardConfig(components=[{"name": "exact"}])
>>> cfg.workers, cfg.components[0].weight
(2, 1.0)
"""

from __future__ import annotations

from pydantic import Field, field_validator

from posttrain.config import RewardSpec, Section


class RewardConfig(Section):
    components: list[RewardSpec] = Field(..., min_length=1, description="Rewards and weights; composite = weighted sum.")
    timeout_s: float = Field(30.0, gt=0, description="Per call; a worker past it is killed.")
    workers: int = Field(2, ge=1, description="Reward worker processes.")
    retries: int = Field(1, ge=0, description="Extra attempts after a timeout or crashed worker.")
    max_failed_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Stop the run when a reward fails on more of a batch than this.")
    chunk_size: int | None = Field(None, ge=1, description="Samples per worker message (default: automatic).")
    memory_mb: int = Field(4096, ge=0, description="Address-space limit per worker (0 = none).")

    @field_validator("components")
    @classmethod
    def _resolvable(cls, components: list[RewardSpec]) -> list[RewardSpec]:
        from rewards.api import RewardError, resolve_reward
        from rewards.scorer import check_kwargs

        for spec in components:
            try:
                check_kwargs(resolve_reward(spec.name), spec.kwargs)
            except RewardError as e:
                raise ValueError(str(e)) from None
        return components

    def build_scorer(self, **overrides):
        from rewards.scorer import Scorer

        return Scorer.from_config(self, **overrides)
