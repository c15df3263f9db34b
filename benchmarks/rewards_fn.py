"""Rewards the benchmarks train on (importable by reward worker processes: keep light).

>>> digit_share("a1b2", {})
0.5
>>> digit_rich("abcdefgh12", {}), digit_rich("abcdefghi1", {})
(1.0, 0.0)
"""

from __future__ import annotations


def digit_share(completion: str, sample: dict) -> float:
    """Share of characters that are digits: varies within a group even for a random
    model, so every group carries a gradient (no group is skipped as uniform)."""
    text = completion if isinstance(completion, str) else str(completion)
    return sum(c.isdigit() for c in text) / max(len(text), 1)


def digit_rich(completion: str, sample: dict) -> float:
    """1 when more than a tenth of the characters are digits, else 0: a 0/1 reward that ~6 % of a
    random tiny model's samples earn, so most groups start uniform (dynamic sampling has work to do)."""
    return float(digit_share(completion, sample) > 0.1)
