"""Advantage estimators as pure tensor functions.

>>> group_advantages(torch.tensor([1.0, 0.0, 1.0, 1.0]), group_size=2)
tensor([ 1., -1.,  0.,  0.])
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_advantages(rewards: Tensor, group_size: int, eps: float = 1e-6) -> Tensor:
    """A_i = (r_i - mean(r)) / std(r) within consecutive groups of `group_size`.

    `rewards` is 1-D of length B*G. NaN marks a failed reward: it is left out of its
    group's statistics and gets advantage 0. A group whose valid rewards are all equal
    (or that has fewer than two valid ones) gets zeros, never NaN. std is the
    population standard deviation of the valid rewards.
    """
    if rewards.dim() != 1 or rewards.numel() % group_size:
        raise ValueError(f"rewards must be 1-D with a multiple of group_size={group_size} entries, "
                         f"got shape {tuple(rewards.shape)}")
    r = rewards.view(-1, group_size)  # (B, G)
    valid = torch.isfinite(r)
    n = valid.sum(-1, keepdim=True)  # (B, 1)
    r0 = torch.where(valid, r, torch.zeros_like(r))
    mean = r0.sum(-1, keepdim=True) / n.clamp(min=1)
    var = (torch.where(valid, r - mean, torch.zeros_like(r)) ** 2).sum(-1, keepdim=True) / n.clamp(min=1)
    std = var.sqrt()
    ok = valid & (std > eps) & (n > 1)
    adv = torch.where(ok, (r - mean) / std.clamp(min=eps), torch.zeros_like(r))
    return adv.reshape(-1)
