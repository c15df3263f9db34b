"""Workload `scale` (issue 14): what grows with the model.

1. Weight sync, object store vs streamed buckets (rollouts/weight_sync.py), against a plain
   memory copy of the same bytes measured in the same process and run (the physical limit
   on this machine: every path must at least copy the weights once). Sizes about 1M, 27M,
   124M and 494M parameters (the last is Qwen2.5-0.5B's shape, configs/scale/), fp32, one
   vLLM engine in a Ray actor. Paths alternate within a repeat; medians over repeats.
2. Cost growth: `posttrain pipeline --config configs/scale/qwen2.5-0.5b-shape.yaml` (2 GSPO
   steps) at each size, with the peak RSS of every process of the run's tree sampled every
   0.25 s: step time, sync time, peak RSS of the trainer, the engine and each other process.
   `single` and `fsdp` (trainer.num_workers=2 trainer.strategy=fsdp: the two PolicyWorker Ray
   actors are in the run's process tree, so each worker's peak RSS is sampled like the others).

Headline keys: `sync_vs_memcpy_494m` (streamed sync seconds / memcpy seconds of the same
bytes) and `fsdp_rss_ratio_494m` (peak RSS per FSDP worker / single-process trainer peak).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from benchmarks.common import Sizes, engine_config, log
from benchmarks.model import addition_rows
from posttrain.core.config import RayConfig

ROOT = Path(__file__).resolve().parents[1]
SCALE_YAML = ROOT / "configs" / "scale" / "qwen2.5-0.5b-shape.yaml"
# make_tiny_model shapes: the demo model's size, the bench model, GPT-2 small's size, Qwen2.5-0.5B's shape
SHAPES: dict[str, dict[str, int]] = {
    "1m": dict(hidden=128, layers=4, heads=2, head_dim=64),
    "27m": dict(hidden=512, layers=8, heads=8, head_dim=64, intermediate=1536),
    "124m": dict(hidden=768, layers=12, heads=12, head_dim=64, intermediate=2048, embedding_rows=50257),
    "494m": dict(hidden=896, layers=24, heads=14, kv_heads=2, head_dim=64, intermediate=4864,
                 embedding_rows=151936),
}
QUICK_SIZES = ("1m", "27m")
GB = 1e9
MIB = 2**20


def build_model(size: str, out: Path) -> tuple[Path, int]:
    """The size's model folder (random weights, a locally trained tokenizer), reused when present."""
    from posttrain.tasks.tiny import make_tiny_model

    d = out / size
    meta = d / "posttrain_tiny.json"
    built = json.loads(meta.read_text()) if meta.is_file() else {}
    if any(built.get(k) != v for k, v in SHAPES[size].items()):  # absent, or built with another shape
        shutil.rmtree(d, ignore_errors=True)
        make_tiny_model(addition_rows(500), d, seed=0, max_positions=512, **SHAPES[size])
    return d, int(json.loads(meta.read_text())["parameters"])


# ---------------------------------------------------------------------------- 1. weight sync

def memcpy_seconds(tensors: list[torch.Tensor], repeats: int = 3, cold: bool = False) -> float:
    """Best-of time to copy these tensors into one buffer (what any sync must do at least once).
    The buffer's pages are touched first (the copy bandwidth, the physical limit), unless `cold`:
    then a fresh buffer per repeat, page faults included (what a receiver allocating per sync pays)."""
    total = sum(t.numel() * t.element_size() for t in tensors)
    buf = torch.zeros(total, dtype=torch.uint8)
    best = float("inf")
    for _ in range(repeats):
        if cold:
            buf = torch.empty(total, dtype=torch.uint8)
        t0, off = time.perf_counter(), 0
        for t in tensors:
            n = t.numel() * t.element_size()
            buf[off:off + n].view(t.dtype).view(t.shape).copy_(t)
            off += n
        best = min(best, time.perf_counter() - t0)
    return best


def sync_size(model_dir: Path, repeats: int, bucket_mb: float) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM

    from rollouts.actors import RolloutPool
    from rollouts.weight_sync import split_aliases

    sd = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    sent = list(split_aliases(sd)[0].values())  # the bytes both paths move: a tied lm_head once
    nbytes = sum(v.numel() * v.element_size() for v in sent)
    pool = RolloutPool(str(model_dir), engine_config(max_model_len=128), RayConfig(num_cpus=2),
                       weight_sync="stream", sync_bucket_mb=bucket_mb, sync_timeout_s=900)
    times: dict[str, list[float]] = {"object_store": [], "stream": [], "memcpy": [], "memcpy_cold": []}
    engine: dict[str, list[float]] = {}  # the engine's side of each streamed sync (receive, checksum, load)
    try:
        version = 0
        for r in range(repeats + 1):  # repeat 0 warms up (the stream path forms its group there)
            for mode in (("object_store", "stream") if r % 2 else ("stream", "object_store")):
                pool.weight_sync = mode
                version += 1
                t0 = time.perf_counter()
                pool.update_weights(sd, version)
                if r:
                    times[mode].append(time.perf_counter() - t0)
                if r and mode == "stream":
                    for k in ("receive_s", "checksum_s", "load_s"):
                        engine.setdefault(k, []).append(pool.last_sync.get(f"sync/engine0_{k}", float("nan")))
            if r:
                times["memcpy"].append(memcpy_seconds(sent, repeats=2))
                times["memcpy_cold"].append(memcpy_seconds(sent, repeats=1, cold=True))
        buckets = len(pool._plan[1]) if pool._plan else None
    finally:
        pool.close()
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"bytes": nbytes, "buckets": buckets, "bucket_mb": bucket_mb, "repeats": times,
            "engine_s": {k: round(statistics.median(v), 3) for k, v in engine.items()},
            **{f"{k}_s": round(v, 4) for k, v in med.items()},
            **{f"{k}_s_per_gb": round(v / (nbytes / GB), 3) for k, v in med.items()},
            "memcpy_gb_s": round(nbytes / GB / med["memcpy"], 2),
            "stream_vs_memcpy": round(med["stream"] / med["memcpy"], 2),
            "stream_vs_memcpy_cold": round(med["stream"] / med["memcpy_cold"], 2),
            "stream_vs_object_store": round(med["stream"] / med["object_store"], 3)}


# ---------------------------------------------------------------------------- 2. cost growth

def _label(p: psutil.Process, root: int) -> str:
    if p.pid == root:
        return "driver (trainer)"
    cmd = p.cmdline()
    if cmd and cmd[0].startswith("ray::"):
        return cmd[0].split()[0].removeprefix("ray::").split(".")[0]  # the actor class: ray::_EngineActor.generate
    return p.name()


class ProcSampler(threading.Thread):
    """Peak RSS of every process in a tree, by label (driver, the Ray actor class, raylet, ...)."""

    def __init__(self, pid: int, every_s: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every_s, self.stop = pid, every_s, threading.Event()
        self.peaks: dict[int, tuple[str, int]] = {}
        self.tree_peak = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                root = psutil.Process(self.pid)
                procs = [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    label = _label(p, self.pid)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
                total += rss
                if rss > self.peaks.get(p.pid, ("", 0))[1]:
                    self.peaks[p.pid] = (label, rss)
            self.tree_peak = max(self.tree_peak, total)
            self.stop.wait(self.every_s)

    def by_label(self) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for label, rss in self.peaks.values():
            out.setdefault(label, []).append(round(rss / MIB, 1))
        return {k: sorted(v, reverse=True) for k, v in sorted(out.items())}


def fsdp_unavailable() -> str | None:
    """Why the fsdp column cannot run yet, or None when `trainer.strategy=fsdp` exists."""
    from posttrain.rl.config import Config

    field = Config.model_fields.get("trainer")
    if field is None or "strategy" not in getattr(field.annotation, "model_fields", {}):
        return "posttrain rl has no trainer.strategy yet (issue 14 item 1, the sharded trainer)"
    if "fsdp" not in str(field.annotation.model_fields["strategy"].annotation):
        return "trainer.strategy does not offer fsdp"
    return None


def cost_run(size: str, strategy: str, out: Path, timeout_s: float) -> dict[str, Any]:
    """One 2-step run of the scale config at this size; step and sync times from its metrics."""
    shape = SHAPES[size]
    over = [f"model.tiny_{k}={v}" for k, v in (("hidden", shape["hidden"]), ("layers", shape["layers"]),
                                                 ("heads", shape["heads"]), ("head_dim", shape["head_dim"]))]
    over += [f"model.tiny_kv_heads={shape.get('kv_heads', 'null')}",
             f"model.tiny_intermediate={shape.get('intermediate', 'null')}",
             f"model.tiny_embedding_rows={shape.get('embedding_rows', 'null')}"]
    if strategy == "fsdp":
        # 2 worker bundles + the engine's CPU: more logical CPUs than the 2 cores, or the engine never places
        over += ["defaults.rl.trainer.num_workers=2", "defaults.rl.trainer.strategy=fsdp", "defaults.rl.ray.num_cpus=4"]
    run_dir = out / f"{size}-{strategy}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run: the pipeline would skip finished stages
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(Path(sys.executable).with_name("posttrain")), "pipeline", "--config", str(SCALE_YAML),
           "--run-dir", str(run_dir), *over]
    log(f"scale: {' '.join(cmd)}")
    logf = out / f"{size}-{strategy}.log"
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=logf.open("w"), stderr=subprocess.STDOUT, env=os.environ.copy())
    sampler = ProcSampler(proc.pid)
    sampler.start()
    try:
        rc = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise RuntimeError(f"scale run {size}/{strategy} did not finish within {timeout_s:.0f}s (see {logf})")
    finally:
        sampler.stop.set()
        sampler.join()
    if rc != 0:
        raise RuntimeError(f"scale run {size}/{strategy} exited {rc}; see {logf}")
    steps = [m for m in map(json.loads, (run_dir / "rl" / "metrics.jsonl").read_text().splitlines())
             if "time/update" in m]
    step_s = [sum(v for k, v in m.items() if k.startswith("time/") and k != "time/rollout_wait") for m in steps]
    peaks = sampler.by_label()
    res = {"strategy": strategy, "wall_s": round(time.monotonic() - t0, 1), "steps": len(steps),
           "step_s": [round(x, 2) for x in step_s], "sync_s": [round(m["time/sync"], 3) for m in steps],
           "update_s": [round(m["time/update"], 2) for m in steps],
           "generate_s": [round(m["time/generate"], 2) for m in steps],
           "peak_rss_mib": peaks, "tree_peak_gib": round(sampler.tree_peak / 2**30, 2),
           "trainer_peak_mib": max(peaks.get("driver (trainer)", [0])),
           "engine_peak_mib": max(peaks.get("_EngineActor", [0])), "log": str(logf)}
    workers = [v for k, v in peaks.items() if "worker" in k.lower() and "reward" not in k.lower()
               and k != "driver (trainer)"]
    if strategy == "fsdp":
        res["worker_peak_mib"] = max((x for v in workers for x in v), default=None)
    summary = run_dir / "rl" / "scale_memory.json"  # beside the run's summary.json
    summary.write_text(json.dumps(res, indent=2))
    return res


# ---------------------------------------------------------------------------- the workload

def run(out: Path, sizes: Sizes, quick: bool = False, only_sizes: list[str] | None = None,
        bucket_mb: float = 256.0, parts: tuple[str, ...] = ("sync", "cost"),
        previous: dict[str, Any] | None = None, strategies: tuple[str, ...] = ("single", "fsdp")
        ) -> tuple[dict, dict]:
    """`previous`: the last run's details; sizes, parts and strategies not measured now are kept from
    it (the same model shapes only), so `--scale-sizes 494m` refreshes one row of the tables."""
    out.mkdir(parents=True, exist_ok=True)
    names = only_sizes or list(QUICK_SIZES if quick else SHAPES)
    bad = [n for n in names if n not in SHAPES] + [p for p in parts if p not in ("sync", "cost")]
    if bad:
        raise ValueError(f"--scale-sizes / --scale-parts: unknown {bad}; sizes {list(SHAPES)}, parts sync,cost")
    details: dict[str, Any] = {"sizes": {}, "cost": {}, "cpu_model": cpu_model()}
    for size, old in ((previous or {}).get("sizes") or {}).items():
        if size in SHAPES and {k: old.get(k) for k in SHAPES[size]} == SHAPES[size]:
            details["sizes"][size] = old
            if size in (previous.get("cost") or {}):
                details["cost"][size] = previous["cost"][size]
    skip = fsdp_unavailable()
    if skip:
        details["fsdp_skipped"] = skip
    for size in names:
        model_dir, params = build_model(size, out / "models")
        details["sizes"][size] = {**details["sizes"].get(size, {}), "parameters": params, **SHAPES[size]}
        if "sync" in parts:
            log(f"scale: weight sync at {size} ({params / 1e6:.1f}M parameters)")
            details["sizes"][size]["sync"] = sync_size(model_dir, sizes.repeats, bucket_mb)
            log(f"scale: {size} sync {details['sizes'][size]['sync']}")
    if "cost" in parts:
        for size in names:
            kept = details["cost"].get(size, {})  # a variant not run now keeps the previous run's numbers
            details["cost"][size] = {
                "single": (_attempt(cost_run, size, "single", out / "runs", 3600) if "single" in strategies
                           else kept.get("single", {"skipped": "not run"})),
                "fsdp": ({"skipped": skip} if skip else _attempt(cost_run, size, "fsdp", out / "runs", 3600)
                         if "fsdp" in strategies else kept.get("fsdp", {"skipped": "not run"}))}
            log(f"scale: {size} cost {details['cost'][size]}")
    for key in ("sizes", "cost"):  # smallest first, whatever order the runs came in
        details[key] = {k: details[key][k] for k in SHAPES if k in details[key]}
    s494 = details["sizes"].get("494m", {}).get("sync")
    headline: dict[str, Any] = {"sync_vs_memcpy_494m": s494["stream_vs_memcpy"] if s494 else None}
    c494 = details["cost"].get("494m", {})
    fsdp = c494.get("fsdp", {})
    single = c494.get("single", {})
    headline["fsdp_rss_ratio_494m"] = (round(fsdp["worker_peak_mib"] / single["trainer_peak_mib"], 3)
                                       if fsdp.get("worker_peak_mib") and single.get("trainer_peak_mib") else None)
    return headline, details


def _attempt(fn: Any, *args: Any) -> dict[str, Any]:
    """One variant's result, or {"error": ...}: a failed fsdp run keeps the single run's numbers."""
    try:
        return fn(*args)
    except Exception as e:  # noqa: BLE001 - recorded in results.json and shown in the table
        log(f"scale: {args[:2]} failed: {type(e).__name__}: {e}")
        return {"error": f"{type(e).__name__}: {e}"[:500]}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"
