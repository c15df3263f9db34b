"""Composite scoring: weighted sum of reward components, failures recorded.

Contract used by the trainers:
    scorer = Scorer(specs, timeout_s=30, workers=2, retries=1, max_failed_fraction=0.5)
    batch = scorer.score(completions, samples)
    batch.rewards  -> list[float | None]     # composite; None = failed and excluded
    batch.errors   -> list[str | None]       # reason per sample ("<reward>: <why>")
    batch.metrics  -> {"reward/<name>/mean", "reward/<name>/failed", "reward/failed_fraction", ...}
    scorer.close()

A component whose spec says `on_failure: value` contributes `failure_value` for a
failed sample (the sample still counts as failed in the metrics); with the default
`exclude` the sample's composite is None and the trainer leaves it out of advantages.
When any component fails on more than `max_failed_fraction` of a batch, `score`
raises `RewardFailureLimit` naming the reward and example reasons.

>>> s = Scorer([{"name": "exact"}], inline=True)
>>> b = s.score(["42", "7"], [{"answer": "42"}, {}])
>>> b.rewards
[1.0, None]
>>> print(b.errors[1])
exact: KeyError: "sample has no 'answer' field"
>>> b.metrics["reward/exact/mean"], b.metrics["reward/failed_fraction"]
(1.0, 0.5)
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from rewards.api import (
    RewardError,
    RewardFailureLimit,
    RewardResult,
    call_reward,
    check_batch,
    check_kwargs,
    describe_exception,
)
from rewards.config import RewardSpec
from rewards.resolve import resolve_reward
from rewards.service import Unit, WorkerPool


@dataclass
class ScoreBatch:
    rewards: list[float | None]
    errors: list[str | None]
    components: dict[str, list[RewardResult]] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)


def as_spec(spec: Any) -> RewardSpec:
    """A RewardSpec from a spec, a dict or a bare name."""
    if isinstance(spec, RewardSpec):
        return spec
    if isinstance(spec, str):
        return RewardSpec(name=spec)
    if isinstance(spec, dict):
        return RewardSpec(**spec)
    if hasattr(spec, "model_dump"):
        return RewardSpec(**spec.model_dump())
    raise TypeError(f"a reward spec must be a RewardSpec, dict or name, got {type(spec).__name__}")


class Scorer:
    """Scores completions with the configured reward components; see the module docstring.

    Rule rewards run in a WorkerPool of `workers` processes (per-call `timeout_s`,
    `retries` on timeouts/crashes, `memory_mb` address-space limit per worker);
    `inline=True` runs them in this process instead (no timeouts: tests and debugging).
    Service rewards (judge, reward model) run here and own their timeouts.
    """

    def __init__(self, specs: Sequence[Any], timeout_s: float = 30.0, workers: int = 2, retries: int = 1,
                 max_failed_fraction: float = 0.5, chunk_size: int | None = None, memory_mb: int = 4096,
                 start_timeout_s: float = 60.0, inline: bool = False):
        if not specs:
            raise ValueError("no rewards configured: set reward.components to at least one reward")
        if not 0.0 <= max_failed_fraction <= 1.0:
            raise ValueError(f"max_failed_fraction={max_failed_fraction} must be within [0, 1]")
        self.specs = [as_spec(s) for s in specs]
        self.fns = [resolve_reward(s.name) for s in self.specs]
        self.max_failed_fraction = max_failed_fraction
        self.keys = self._metric_keys()
        self.services: dict[int, Any] = {}
        self.pool = None
        self._lock = threading.Lock()  # one score() at a time: the pool is not re-entrant
        for i, (spec, rf) in enumerate(zip(self.specs, self.fns)):
            check_kwargs(rf, spec.kwargs)
        try:
            for i, (spec, rf) in enumerate(zip(self.specs, self.fns)):
                if rf.service:
                    try:
                        self.services[i] = rf.fn(**spec.kwargs)
                    except Exception as e:
                        raise RewardError(f"reward {rf.name!r} failed to start: {describe_exception(e)}") from e
            refs = [rf.ref for rf in self.fns if not rf.service]
            if refs and not inline:
                self.pool = WorkerPool(refs, workers=workers, timeout_s=timeout_s, retries=retries,
                                       chunk_size=chunk_size, memory_mb=memory_mb, start_timeout_s=start_timeout_s)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> "Scorer":
        """Build from a `rewards.config.RewardConfig` (or anything with the same fields)."""
        opts = dict(timeout_s=cfg.timeout_s, workers=cfg.workers, retries=cfg.retries,
                    max_failed_fraction=cfg.max_failed_fraction, chunk_size=cfg.chunk_size,
                    memory_mb=cfg.memory_mb)
        opts.update(overrides)
        return cls(cfg.components, **opts)

    def _metric_keys(self) -> list[str]:
        keys, seen = [], {}
        for s in self.specs:
            base = s.name.rpartition(":")[2]  # 'path/to/file.py:fn' logs as reward/fn/...
            seen[base] = seen.get(base, 0) + 1
            keys.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
        return keys

    def warmup(self) -> None:
        """Start the worker processes now instead of on the first score()."""
        if self.pool is not None:
            ready = self.pool.start()
            if ready < self.pool.workers:
                raise RewardError(f"only {ready} of {self.pool.workers} reward workers started")

    # ------------------------------------------------------------------ scoring

    def score_components(self, completions: list[str], samples: list[dict]) -> list[list[RewardResult]]:
        """Per component, one RewardResult per sample (no composite, no limit check)."""
        units: dict[int, Unit] = {}
        out: list[list[RewardResult] | None] = [None] * len(self.specs)
        for i, (spec, rf) in enumerate(zip(self.specs, self.fns)):
            if rf.service:
                try:
                    out[i] = check_batch(self.services[i].score(completions, samples), len(completions))
                except Exception as e:
                    out[i] = [RewardResult.fail(describe_exception(e))] * len(completions)
            elif self.pool is None:
                out[i] = call_reward(rf, completions, samples, spec.kwargs)
            else:
                units[i] = Unit(rf, spec.kwargs, completions, samples)
        if units:
            self.pool.run(list(units.values()))
            for i, u in units.items():
                out[i] = [r if r is not None else RewardResult.fail("internal: no result") for r in u.results]
        return out  # type: ignore[return-value]

    def score(self, completions: list[str], samples: list[dict]) -> ScoreBatch:
        completions, samples = list(completions), list(samples)
        if len(completions) != len(samples):
            raise ValueError(f"score(): {len(completions)} completions but {len(samples)} samples")
        for j, c in enumerate(completions):
            if not isinstance(c, str):
                raise TypeError(f"score(): completion {j} is a {type(c).__name__}, not a str")
        t0 = time.perf_counter()
        n = len(completions)
        with self._lock:
            per = self.score_components(completions, samples)
        total: list[float | None] = [0.0] * n
        errors: list[str | None] = [None] * n
        batch = ScoreBatch(total, errors)
        worst: tuple[float, int] = (-1.0, 0)
        for k, (key, spec, results) in enumerate(zip(self.keys, self.specs, per)):
            batch.components[key] = results
            ok = [r.value for r in results if r.ok]
            failed = n - len(ok)
            batch.metrics[f"reward/{key}/mean"] = sum(ok) / len(ok) if ok else float("nan")
            batch.metrics[f"reward/{key}/failed"] = float(failed)
            batch.metrics[f"reward/{key}/timeouts"] = float(sum("timeout" in (r.error or "") for r in results))
            if n and failed / n > worst[0]:
                worst = (failed / n, k)
            for i, r in enumerate(results):
                if r.ok:
                    if total[i] is not None:
                        total[i] += spec.weight * r.value
                    continue
                errors[i] = errors[i] or f"{key}: {r.error}"
                if spec.on_failure == "value":
                    if total[i] is not None:
                        total[i] += spec.weight * spec.failure_value
                else:
                    total[i] = None
        ok_total = [t for t in total if t is not None and math.isfinite(t)]
        batch.metrics["reward/mean"] = sum(ok_total) / len(ok_total) if ok_total else float("nan")
        batch.metrics["reward/failed_fraction"] = sum(e is not None for e in errors) / max(n, 1)
        batch.metrics["reward/excluded_fraction"] = sum(t is None for t in total) / max(n, 1)
        batch.metrics["reward/time_s"] = time.perf_counter() - t0
        if n and worst[0] > self.max_failed_fraction:
            self._raise_limit(batch, worst[1], worst[0])
        return batch

    def _raise_limit(self, batch: ScoreBatch, k: int, frac: float) -> None:
        key = self.keys[k]
        reasons = list(dict.fromkeys(r.error for r in batch.components[key] if not r.ok))[:3]
        n = len(batch.rewards)
        err = RewardFailureLimit(
            f"reward {key!r} failed on {round(frac * n)}/{n} samples ({frac:.0%} > max_failed_fraction "
            f"{self.max_failed_fraction:.0%}); e.g. " + "; ".join(reasons) +
            ". Fix the reward (try `posttrain rewards check " + self.specs[k].name + "`) or raise "
            "reward.max_failed_fraction.", key, frac, reasons)
        err.batch = batch  # type: ignore[attr-defined]
        raise err

    def close(self) -> None:
        for svc in self.services.values():
            try:
                close = getattr(svc, "close", None)
                if close:
                    close()
            except Exception:
                pass
        self.services = {}
        if self.pool is not None:
            self.pool.close()
            self.pool = None

    def __enter__(self) -> "Scorer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
