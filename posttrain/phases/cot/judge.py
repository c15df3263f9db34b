"""Step 3 of the LongCoT pipeline: judge each path at two levels and sort it into a tier.

- answer level: the `answer` reward (a verifier such as `exact`/`math`, or the `judge`
  reward) >= its threshold;
- step level: the `steps` reward (a step-check reward, or the judge with a steps rubric)
  >= its threshold.

    tier A: both levels pass        -> kept (borderline A: also sent to human review)
    tier B: exactly one level passes -> human review (auto mode drops them)
    tier C: neither passes           -> discarded

Without a `steps` reward only the answer is judged: A when it passes, C otherwise (no B).
A *borderline* A is one whose confidence (mean log-prob) is in the lowest
`borderline_quantile` of the tier-A paths: right, but the model was unsure of it.
"""

from __future__ import annotations

from typing import Any

from rewards.config import RewardConfig
from rewards.scorer import Scorer


def score_all(records: list[dict[str, Any]], reward: RewardConfig) -> list[float | None]:
    with Scorer.from_config(reward, max_failed_fraction=1.0) as scorer:
        return scorer.score([r["completion"] for r in records], records).rewards


def tier_of(answer_ok: bool, steps_ok: bool | None) -> str:
    """Tier from the two judge levels (steps None: answer only).

    >>> [tier_of(a, s) for a, s in [(True, True), (True, False), (False, True), (False, False), (True, None)]]
    ['A', 'B', 'B', 'C', 'A']
    """
    if steps_ok is None:
        return "A" if answer_ok else "C"
    return {2: "A", 1: "B", 0: "C"}[int(answer_ok) + int(steps_ok)]


def borderline_cut(records: list[dict[str, Any]], quantile: float) -> float:
    """The mean log-prob below which a tier-A path is borderline (-inf when there are none)."""
    conf = sorted(r["mean_logprob"] for r in records if r["tier"] == "A")
    if not conf or quantile <= 0:
        return float("-inf")
    return conf[min(len(conf) - 1, int(quantile * len(conf)))]


def judge(records: list[dict[str, Any]], answer: RewardConfig, steps: RewardConfig | None,
          borderline_quantile: float = 0.2) -> list[dict[str, Any]]:
    """Records with `answer_reward`, `steps_reward`, `tier` and `borderline`."""
    a = score_all(records, answer)
    s = score_all(records, steps) if steps is not None else [None] * len(records)
    out = []
    for r, ar, sr in zip(records, a, s):
        answer_ok = ar is not None and ar >= answer.threshold
        steps_ok = None if steps is None else (sr is not None and sr >= steps.threshold)
        out.append({**r, "answer_reward": ar, "steps_reward": sr, "tier": tier_of(answer_ok, steps_ok)})
    cut = borderline_cut(out, borderline_quantile)
    for r in out:
        r["borderline"] = r["tier"] == "A" and r["mean_logprob"] < cut
    return out


def tier_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    counts = {f"tier_{t}": sum(r["tier"] == t for r in records) for t in "ABC"}
    counts["borderline_A"] = sum(bool(r.get("borderline")) for r in records)
    return counts
