"""`make chaos`: the Keye recipe (configs/recipes/keye.yaml, shortened by overrides) while a
driver SIGKILLs, at seeded random moments and in turn, the pipeline process, a rollout
engine actor and a reward worker; after a pipeline kill it resumes with `--resume`.

Writes RUN/summary.json (RUN = --out, default runs/chaos):
  kills      [{"kind", "pid", "at_s" (since that attempt's start), "stage", "attempt"}]
  resumes    number of `--resume` restarts
  completed  true when the final stage finished (the resumed pipeline exited 0)
  orphans    [{"pid", "cmdline"}] processes of the run still alive after it ended (must be [])
  lost       ["what"] results complete before a kill and missing or corrupt after it (must be [])
  accuracy   {"chaos": {stage: acc}, "uninterrupted": {stage: acc}}  (RUN/ref is the clean run)

A kill of an engine actor or a reward worker is survived in place (Ray restarts the actor,
the pool a worker); a kill of the pipeline process is followed by `--resume`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "recipes" / "keye.yaml"
# The recipe shortened to minutes: fewer rows, steps and samples (same stages, same wiring).
SHORT = ["data.demo_train_rows=3000", "data.demo_eval_rows=100", "stages.sft.values.train.max_steps=400",
         "stages.rl1.values.train.steps=12", "stages.rl2.values.train.steps=12",
         "stages.rl1.values.train.checkpoint_every=3", "stages.rl2.values.train.checkpoint_every=3",
         "stages.rft.values.data.max_prompts=150", "stages.rft.values.sft.train.max_steps=100",
         "stages.filter.values.data.max_prompts=200", "report=false"]
KINDS = ("pipeline", "engine", "reward_worker", "pipeline")
MARKERS = {"engine": "ray::_EngineActor", "reward_worker": "rewards.worker"}


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def find_target(kind: str, pipeline_pid: int) -> psutil.Process | None:
    """The process to kill: the pipeline itself, or one of its descendants by command line."""
    if kind == "pipeline":
        return psutil.Process(pipeline_pid)
    for p in descendants(pipeline_pid):
        try:
            if MARKERS[kind] in " ".join(p.cmdline()):
                return p
        except psutil.NoSuchProcess:
            continue
    return None


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def complete_results(run: Path) -> dict[str, str]:
    """What a kill must not lose: each done stage's summary.json and final/ files (by sha256),
    and, per stage, that `checkpoints/latest` names a complete checkpoint ("" as the hash)."""
    out: dict[str, str] = {}
    state_file = run / "pipeline_state.json"
    stages = json.loads(state_file.read_text()).get("stages", {}) if state_file.is_file() else {}
    for name, rec in stages.items():
        d = run / name
        if rec.get("status") == "done":
            for f in [d / "summary.json", *sorted((d / "final").glob("*"))]:
                if f.is_file():
                    out[str(f.relative_to(run))] = _sha(f)
        if (d / "checkpoints" / "latest").is_file():
            out[f"{name}/checkpoints/latest"] = ""
    return out


def lost_after(before: dict[str, str], run: Path) -> list[str]:
    """Entries of `before` that are missing or changed now (a checkpoint pointer must still
    name a complete checkpoint, possibly a newer one)."""
    lost = []
    for rel, digest in before.items():
        path = run / rel
        if rel.endswith("checkpoints/latest"):
            target = path.parent / path.read_text().strip() if path.is_file() else None
            if target is None or not ((target / "trainer.pt").is_file() or (target / "trainer_state.json").is_file()):
                lost.append(f"{rel} (names no complete checkpoint)")
        elif not path.is_file():
            lost.append(f"{rel} (missing)")
        elif _sha(path) != digest:
            lost.append(f"{rel} (changed)")
    return lost


def running_stage(run: Path) -> str | None:
    state_file = run / "pipeline_state.json"
    if not state_file.is_file():
        return None
    try:
        stages = json.loads(state_file.read_text()).get("stages", {})
    except json.JSONDecodeError:
        return None
    return next((n for n, r in stages.items() if r.get("status") == "running"), None)


def start(run: Path, overrides: list[str], resume: bool, log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "posttrain.cli", "pipeline", "--config", str(RECIPE), *overrides]
    cmd += ["--resume", str(run)] if resume else ["--run-dir", str(run)]
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stage_accuracies(run: Path) -> dict[str, Any]:
    summary = run / "summary.json"
    if not summary.is_file():
        return {}
    return {s["name"]: s["accuracy"] for s in json.loads(summary.read_text())["stages"]}


def chaos_run(run: Path, overrides: list[str], seed: int, window: tuple[float, float], log) -> dict[str, Any]:
    rng = random.Random(seed)
    kills: list[dict[str, Any]] = []
    lost: list[str] = []
    seen: dict[int, tuple[float, str]] = {}  # pid -> (create_time, cmdline) of every process of the run
    proc, attempt, resumes = start(run, overrides, False, log), 1, 0
    t0 = time.monotonic()
    for kind in KINDS:
        delay = rng.uniform(*window)
        target = None
        while proc.poll() is None:
            for p in descendants(proc.pid):
                try:
                    seen.setdefault(p.pid, (p.create_time(), " ".join(p.cmdline())))
                except psutil.NoSuchProcess:
                    pass
            if time.monotonic() - t0 >= delay:
                target = find_target(kind, proc.pid)
                if target is not None:
                    break
            time.sleep(0.2)
        if proc.poll() is not None:
            break  # the run finished before this kill
        before = complete_results(run)
        kills.append({"kind": kind, "pid": target.pid, "at_s": round(time.monotonic() - t0, 1),
                      "stage": running_stage(run), "attempt": attempt})
        target.send_signal(signal.SIGKILL)
        if kind == "pipeline":
            proc.wait()
            time.sleep(2.0)
            lost += lost_after(before, run)
            proc, attempt, resumes = start(run, overrides, True, log), attempt + 1, resumes + 1
            t0 = time.monotonic()
        else:
            time.sleep(1.0)
            lost += lost_after(before, run)
    code = proc.wait()
    for _ in range(3):  # ended by a kill we did not make (or a preemption): resume, a bounded number of times
        if code in (0, 2):
            break
        proc, attempt, resumes = start(run, overrides, True, log), attempt + 1, resumes + 1
        code = proc.wait()
    time.sleep(3.0)
    orphans = []
    for pid, (created, cmd) in seen.items():
        try:
            p = psutil.Process(pid)
            if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                orphans.append({"pid": pid, "cmdline": cmd[:200]})
        except psutil.NoSuchProcess:
            pass
    return {"kills": kills, "resumes": resumes, "completed": code == 0 and (run / "summary.json").is_file(),
            "orphans": orphans, "lost": lost, "exit_code": code}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "chaos")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=float, nargs=2, default=(20.0, 90.0),
                    help="seconds after a (re)start within which each kill falls")
    ap.add_argument("overrides", nargs="*", help="recipe overrides after the shortening ones")
    a = ap.parse_args(argv)
    overrides = [*SHORT, *a.overrides]
    a.out.mkdir(parents=True, exist_ok=True)
    with (a.out / "chaos.log").open("a") as log:
        ref = a.out / "ref"
        if not (ref / "summary.json").is_file():  # the uninterrupted run, once
            if ref.exists():
                subprocess.run(["rm", "-rf", str(ref)], check=True)
            start(ref, overrides, False, log).wait()
        run = a.out / "run"
        if run.exists():
            subprocess.run(["rm", "-rf", str(run)], check=True)
        result = chaos_run(run, overrides, a.seed, tuple(a.window), log)
    result["accuracy"] = {"chaos": stage_accuracies(run), "uninterrupted": stage_accuracies(ref)}
    (a.out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["completed"] and not result["orphans"] and not result["lost"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
