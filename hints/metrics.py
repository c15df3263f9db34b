"""Hint metrics: levels in use, and per level the all-wrong fraction and mean correct of G.

Keys: `hints/level_<k>` (prompts at level k), `hints/all_wrong/level_<k>`,
`hints/mean_correct/level_<k>` (of G), `hints/groups/level_<k>`, and
`hints/hard_pass_rate_no_hint` (hard prompts evaluated without hints).

>>> s = LevelStats(); s.add(0, 0, 4); s.add(0, 2, 4); s.add(5, 4, 4)
>>> [(r["level"], r["all_wrong"], r["mean_correct"]) for r in s.table()]
[(0, 0.5, 1.0), (5, 0.0, 4.0)]
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

from hints.levels import ALL_LEVELS


def level_histogram(levels: Iterable[int]) -> dict[str, float]:
    counts = Counter(levels)
    return {f"hints/level_{k}": float(counts.get(k, 0)) for k in ALL_LEVELS}


def count_correct(rewards: Sequence[float | None], threshold: float) -> tuple[int, int]:
    """(correct, scored) of one group; failed rewards (None) are left out, never counted as wrong."""
    scored = [r for r in rewards if r is not None]
    return sum(r >= threshold for r in scored), len(scored)


@dataclass
class LevelStats:
    """Groups per level: how many were all wrong, and how many of G were correct on average."""

    groups: Counter = field(default_factory=Counter)
    all_wrong: Counter = field(default_factory=Counter)
    correct: Counter = field(default_factory=Counter)

    def add(self, level: int, correct: int, total: int) -> None:
        if total <= 0:
            return
        self.groups[level] += 1
        self.all_wrong[level] += correct == 0
        self.correct[level] += correct

    def table(self) -> list[dict[str, Any]]:
        return [{"level": k, "all_wrong": self.all_wrong[k] / self.groups[k],
                 "mean_correct": self.correct[k] / self.groups[k], "groups": self.groups[k]}
                for k in ALL_LEVELS if self.groups[k]]

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for row in self.table():
            k = row["level"]
            out[f"hints/all_wrong/level_{k}"] = row["all_wrong"]
            out[f"hints/mean_correct/level_{k}"] = row["mean_correct"]
            out[f"hints/groups/level_{k}"] = float(row["groups"])
        return out


def hard_pass_rate(correct_by_id: dict[str, float], hard_ids: Iterable[str]) -> dict[str, float]:
    """Pass rate (mean over hard prompts of their correct fraction) evaluated without hints."""
    vals = [correct_by_id[i] for i in hard_ids if i in correct_by_id]
    if not vals:
        return {}
    return {"hints/hard_pass_rate_no_hint": sum(vals) / len(vals), "hints/hard_prompts": float(len(vals))}
