"""Workload `memory`: peak resident memory of the demo (SFT then GSPO with a Ray actor
holding a vLLM engine, reward workers), summed over the whole process tree (Ray's
GCS/raylet/workers are descendants of the driver), sampled with psutil every 0.25 s.

The bench runs the demo with its SFT capped (`--demo-sft-steps`, default 300) and
`--demo-rl-steps` (default 20) GSPO steps: the peak is reached in the GSPO phase, once the vLLM engine, the trainer
and the reward workers are all up; more steps repeat the same work. `--skip-demo` reuses the last
measurement in OUT/memory/demo_memory.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import Sizes, log

GIB = 2**30


def tree_rss(pid: int) -> tuple[int, int]:
    """(sum of RSS bytes over pid and all descendants, process count)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0, 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total, len(procs)


class Sampler(threading.Thread):
    def __init__(self, pid: int, every_s: float = 0.25):
        super().__init__(daemon=True)
        self.pid, self.every_s = pid, every_s
        self.peak, self.peak_procs, self.peak_t = 0, 0, 0.0
        self.timeline: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.t0 = time.monotonic()

    def run(self) -> None:
        last_keep = -1.0
        while not self.stop.is_set():
            rss, n = tree_rss(self.pid)
            t = time.monotonic() - self.t0
            if rss > self.peak:
                self.peak, self.peak_procs, self.peak_t = rss, n, t
            if t - last_keep >= 2.0:
                self.timeline.append((round(t, 1), round(rss / GIB, 3)))
                last_keep = t
            self.stop.wait(self.every_s)


def measure_demo(run_dir: Path, sft: list[str], rl: list[str], timeout_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.demo_driver", str(run_dir)]
    cmd += [x for o in sft for x in ("--sft", o)] + [x for o in rl for x in ("--rl", o)]
    log(f"memory: {' '.join(cmd)}")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=(run_dir.parent / "demo.log").open("w"), text=True)
    sampler = Sampler(proc.pid)
    sampler.start()
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
        raise RuntimeError(f"demo did not finish within {timeout_s:.0f}s (see {run_dir.parent / 'demo.log'})")
    finally:
        sampler.stop.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"demo exited {proc.returncode}; see {run_dir.parent / 'demo.log'}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    info = json.loads(lines[-1]) if lines else {}
    return {"peak_rss_gib": round(sampler.peak / GIB, 3), "peak_procs": sampler.peak_procs,
            "peak_at_s": round(sampler.peak_t, 1), "demo_wall_s": round(time.monotonic() - t0, 1),
            "timeline_gib": sampler.timeline, "how": info.get("how"), "summary": info.get("summary"),
            "sft_overrides": sft, "rl_overrides": rl, "run_dir": str(run_dir)}


def run(out: Path, sizes: Sizes, skip_demo: bool = False, quick: bool = False,
        sft_steps: int | None = 300, rl_steps: int = 20) -> tuple[dict, dict]:
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "demo_memory.json"
    if skip_demo:
        if not cache.is_file():
            raise FileNotFoundError(f"--skip-demo but no earlier measurement in {cache}; run without --skip-demo")
        res = json.loads(cache.read_text())
        res["reused_from"] = str(cache)
    else:
        steps = sizes.acc_sft_max_steps if quick else sft_steps
        sft = [f"train.max_steps={steps}", "eval.every=0"] if steps else []
        rl = [f"train.steps={3 if quick else rl_steps}", "eval.every=0", "train.checkpoint_every=0"]
        res = measure_demo(out / "demo", sft, rl, timeout_s=900 if quick else 1500)
        cache.write_text(json.dumps(res, indent=2))
    return {"demo_peak_rss_gib": res["peak_rss_gib"]}, res
