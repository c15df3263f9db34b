"""Benchmark: the reward service (worker pool) vs a sequential math-verify loop.

`bench_rewards()` scores the same rows with `math` both ways in the same run,
interleaved (sequential, service, sequential, ...), and reports the speed-up per
repeat (median/min/max). The pool is started and warmed before timing; its start-up
time is reported separately. Target on 2 cores with 2 workers: >= 1.8x and no call
over its timeout. Run: `python -m rewards.bench [n_rows] [workers] [repeats]`.
"""

from __future__ import annotations

import json
import os
import random
import resource
import statistics
import sys
import time

import psutil

from rewards.builtin.math_answer import _parse_gold, math_reward
from rewards.scorer import Scorer


def make_math_rows(n: int, seed: int = 0) -> tuple[list[str], list[dict]]:
    """Rows with distinct answers in mixed notations (mostly numbers and fractions, one in
    ten a set or interval, which math-verify parses ~10x slower); about half right."""
    rng = random.Random(seed)
    comps, rows = [], []
    for i in range(n):
        a, b = rng.randint(1, 999), rng.randint(2, 97)
        kind = (0, 0, 0, 4, 4, 4, 4, 1, 1, 2 + (i // 10) % 2)[i % 10]
        if kind == 0:
            gold, right, wrong = f"\\frac{{{a}}}{{{b}}}", f"{a}/{b}", f"{a + 1}/{b}"
        elif kind == 1:
            gold, right, wrong = f"{a}.{b:02d}", f"\\frac{{{a * 100 + b}}}{{100}}", f"{a}.{b + 1:02d}"
        elif kind == 2:
            gold, right, wrong = f"\\{{{a}, {b}\\}}", f"\\{{{b}, {a}\\}}", f"\\{{{a}, {b + 1}\\}}"
        elif kind == 3:
            gold, right, wrong = f"({a}, {a + b}]", f"({a},{a + b}]", f"[{a},{a + b}]"
        else:
            gold, right, wrong = f"{a * b}", f"{a} \\cdot {b}", f"{a * b + 1}"
        answer = right if rng.random() < 0.5 else wrong
        comps.append(f"Working it out step by step for row {i}... so the result is \\boxed{{{answer}}}.")
        rows.append({"id": str(i), "answer": gold})
    return comps, rows


def _cpu_self() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_of(pids: list[int]) -> list[float]:
    return [sum(psutil.Process(p).cpu_times()[:2]) for p in pids]


def _sequential(comps: list[str], rows: list[dict]) -> tuple[float, list[float | None], float]:
    _parse_gold.cache_clear()
    out: list[float | None] = []
    worst = 0.0
    t0 = time.perf_counter()
    for c, r in zip(comps, rows):
        t = time.perf_counter()
        try:
            out.append(math_reward(c, r))
        except Exception:
            out.append(None)
        worst = max(worst, time.perf_counter() - t)
    return time.perf_counter() - t0, out, worst


def bench_rewards(n_rows: int = 10000, workers: int = 2, repeats: int = 3, timeout_s: float = 10.0) -> dict:
    """Speed-up of the reward service over a sequential loop; see the module docstring."""
    comps, rows = make_math_rows(n_rows)
    t0 = time.perf_counter()
    scorer = Scorer(["math"], workers=workers, timeout_s=timeout_s, retries=0, max_failed_fraction=1.0)
    try:
        warm = make_math_rows(workers * 8, seed=1)
        scorer.score(*warm)
        start_s = time.perf_counter() - t0
        _sequential(*warm)  # both sides warm: imports and math-verify's lazy set-up are paid
        seq_s, svc_s, timeouts, failed, worst, mismatches = [], [], 0, 0, 0.0, 0
        seq_cpu, svc_cpu, parent_cpu = [], [], []
        load_start = os.getloadavg()[0]
        for _ in range(repeats):
            c = _cpu_self()
            s, seq_out, w = _sequential(comps, rows)
            seq_cpu.append(_cpu_self() - c)
            seq_s.append(s)
            worst = max(worst, w)
            pids = [wk.proc.pid for wk in scorer.pool._live]
            before, c = _cpu_of(pids), _cpu_self()
            t = time.perf_counter()
            batch = scorer.score(comps, rows)
            svc_s.append(time.perf_counter() - t)
            parent_cpu.append(_cpu_self() - c)
            alive = [p for p in pids if p in {wk.proc.pid for wk in scorer.pool._live}]
            svc_cpu.append(max(b - a for p, a, b in zip(pids, before, _cpu_of(alive)) if p in alive))
            timeouts += int(batch.metrics["reward/math/timeouts"])
            failed += int(batch.metrics["reward/math/failed"])
            mismatches += sum(a != b for a, b in zip(seq_out, batch.rewards))
    finally:
        scorer.close()
    ratios = [a / b for a, b in zip(seq_s, svc_s)]
    return {
        "n_rows": n_rows, "workers": workers, "repeats": repeats, "cpu_count": os.cpu_count(),
        "sequential_s": [round(x, 3) for x in seq_s], "service_s": [round(x, 3) for x in svc_s],
        "speedups": [round(r, 4) for r in ratios],  # per repeat: sequential_s / service_s
        "speedup_median": round(statistics.median(ratios), 3), "speedup_min": round(min(ratios), 3),
        "speedup_max": round(max(ratios), 3), "sequential_rows_per_s": round(n_rows / statistics.median(seq_s), 1),
        "service_rows_per_s": round(n_rows / statistics.median(svc_s), 1), "pool_start_s": round(start_s, 3),
        "timeout_s": timeout_s, "timeouts": timeouts, "failed": failed, "max_sequential_call_s": round(worst, 4),
        "results_differ": mismatches, "target_speedup": 1.8,
        # CPU accounting: on a loaded machine the wall ratio is capped by the share of the
        # cores the workers get; sequential CPU / busiest worker's CPU is the ratio with
        # one idle core per worker.
        "loadavg_1m_start": round(load_start, 2), "loadavg_1m_end": round(os.getloadavg()[0], 2),
        "sequential_cpu_s": [round(x, 2) for x in seq_cpu], "service_busiest_worker_cpu_s": [round(x, 2) for x in svc_cpu],
        "service_parent_cpu_s": [round(x, 2) for x in parent_cpu],
        "cpu_speedup_median": round(statistics.median(a / b for a, b in zip(seq_cpu, svc_cpu)), 3),
        "meets_target": statistics.median(ratios) >= 1.8 and timeouts == 0,
    }


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:4]]
    print(json.dumps(bench_rewards(*args), indent=2))
