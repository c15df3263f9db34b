"""Composite scoring: weighted sum of reward components, failures recorded.

Contract used by the trainers:
    scorer = Scorer(specs)                  # specs: list of posttrain.config.RewardSpec
    batch = scorer.score(completions, samples)
    batch.rewards  -> list[float | None]     # composite; None = failed and excluded
    batch.errors   -> list[str | None]       # reason per sample
    batch.metrics  -> {"reward/<name>/mean": ..., "reward/<name>/failed": ..., ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from rewards.api import RewardResult, check_value, resolve_reward


@dataclass
class ScoreBatch:
    rewards: list[float | None]
    errors: list[str | None]
    components: dict[str, list[RewardResult]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


class Scorer:
    def __init__(self, specs: Sequence[Any]):
        if not specs:
            raise ValueError("no rewards configured: set reward.components to at least one reward")
        self.specs = list(specs)
        self.fns = [resolve_reward(s.name) for s in self.specs]

    def _component(self, fn, completions: list[str], samples: list[dict], kwargs: dict) -> list[RewardResult]:
        out = []
        for c, s in zip(completions, samples):
            try:
                out.append(check_value(fn.fn(c, s, **kwargs)))
            except Exception as e:  # a plugin error is a recorded failure
                out.append(RewardResult(None, f"{type(e).__name__}: {e}"))
        return out

    def score(self, completions: list[str], samples: list[dict]) -> ScoreBatch:
        n = len(completions)
        total: list[float | None] = [0.0] * n
        errors: list[str | None] = [None] * n
        batch = ScoreBatch(total, errors)
        for spec, fn in zip(self.specs, self.fns):
            results = self._component(fn, completions, samples, spec.kwargs)
            batch.components[spec.name] = results
            ok = [r.value for r in results if r.ok]
            batch.metrics[f"reward/{spec.name}/mean"] = sum(ok) / len(ok) if ok else float("nan")
            batch.metrics[f"reward/{spec.name}/failed"] = float(n - len(ok))
            for i, r in enumerate(results):
                if r.ok:
                    if total[i] is not None:
                        total[i] += spec.weight * r.value
                elif spec.on_failure == "value":
                    if total[i] is not None:
                        total[i] += spec.weight * spec.failure_value
                    errors[i] = errors[i] or f"{spec.name}: {r.error}"
                else:
                    total[i] = None
                    errors[i] = errors[i] or f"{spec.name}: {r.error}"
        batch.metrics["reward/failed_fraction"] = sum(e is not None for e in errors) / max(n, 1)
        return batch

    def close(self) -> None:
        pass
