"""Reward plugins and the services that run them.

A reward is a plain function registered with `@reward("name")`; scoring goes through
`rewards.scorer.Scorer`, which turns every outcome into a value or a recorded failure.
"""

from rewards.api import RewardResult, reward
from rewards.resolve import resolve_reward

__all__ = ["RewardResult", "reward", "resolve_reward"]
