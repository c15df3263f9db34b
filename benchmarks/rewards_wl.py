"""Workload `rewards`: the reward service (2 workers) vs a sequential math-verify loop,
measured by rewards.bench.bench_rewards (interleaved repeats)."""

from __future__ import annotations

from benchmarks.common import Sizes
from benchmarks.stats import ratio_stats
from rewards.bench import bench_rewards


def run(sizes: Sizes) -> tuple[dict, dict]:
    res = bench_rewards(n_rows=sizes.reward_rows, workers=2, repeats=sizes.repeats)
    ratios = [a / b for a, b in zip(res["sequential_s"], res["service_s"])]
    return ratio_stats("reward_vs_sequential", ratios), res
