"""What of a scored batch the update sees: DAPO's informative groups and overlong handling.

Pure functions of tensors and numbers (the trainer calls them in `select`).

>>> informative_groups(torch.tensor([1.0, 1.0, 0.0, 1.0, float("nan"), 0.0]), 2).tolist()
[False, True, False]
>>> overlong_penalty(torch.tensor([3, 7, 8, 8]), torch.tensor([False, False, False, True]), 8, 2, 1.0).tolist()
[0.0, -0.5, -1.0, -1.0]
"""

from __future__ import annotations

import torch
from torch import Tensor


def informative_groups(rewards: Tensor, group_size: int) -> Tensor:
    """(B,) bool: the groups with at least two finite rewards that differ (a nonzero advantage)."""
    r = rewards.view(-1, group_size)  # (B, G)
    valid = torch.isfinite(r)
    hi = torch.where(valid, r, torch.full_like(r, -torch.inf)).max(-1).values
    lo = torch.where(valid, r, torch.full_like(r, torch.inf)).min(-1).values
    return (valid.sum(-1) > 1) & (hi > lo)


def overlong_penalty(lengths: Tensor, truncated: Tensor, max_new_tokens: int, buffer: int,
                     penalty: float) -> Tensor:
    """DAPO's soft overlong punishment (arXiv 2503.14476, eq. 13), added to the reward:

        0                                   if |y| <= L_max - L_cache
        ((L_max - L_cache) - |y|) / L_cache if L_max - L_cache < |y| <= L_max
        -1                                  if the response was cut (|y| would exceed L_max)

    times `penalty`, with L_max = max_new_tokens and L_cache = buffer."""
    free = max_new_tokens - buffer
    ramp = ((free - lengths.to(torch.float64)) / buffer).clamp(min=-1.0, max=0.0)  # (N,)
    return torch.where(truncated, torch.full_like(ramp, -1.0), ramp) * penalty
