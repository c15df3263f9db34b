"""Rewards the benchmarks train on (importable by reward worker processes: keep light).

>>> digit_share("a1b2", {})
0.5
"""

from __future__ import annotations


def digit_share(completion: str, sample: dict) -> float:
    """Share of characters that are digits: varies within a group even for a random
    model, so every group carries a gradient (no group is skipped as uniform)."""
    text = completion if isinstance(completion, str) else str(completion)
    return sum(c.isdigit() for c in text) / max(len(text), 1)
