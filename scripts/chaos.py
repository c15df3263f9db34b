"""`make chaos`: the Keye recipe (configs/recipes/keye.yaml, shortened by overrides) while a
driver SIGKILLs, at seeded random moments and in turn, the pipeline process, a rollout
engine actor and a reward worker; after a pipeline kill it resumes with `--resume`.

The runs (all in RUN/ref, then moved, because a stage's config hash covers its paths):
  RUN/uninterrupted  the recipe, start to end, no kill
  RUN/run            the chaos run: from the uninterrupted run's SFT stage (a copy: the same
                     SFT model, so the kills, which fall in the stages after it, are compared
                     on equal footing; SFT kills and resumes are tested in
                     tests/posttrain/pipeline/test_pipeline_resume.py), then every later stage
                     while the driver kills
  RUN/noise-seed-N   from the same SFT, the later stages uninterrupted with training and
                     sampling seed N (--noise-seeds): how far the results move by seed alone

Writes RUN/summary.json (RUN = --out, default runs/chaos):
  kills      [{"kind", "pid", "at_s" (since that attempt's start), "stage", "attempt"}]
  resumes    number of `--resume` restarts
  completed  true when the final stage finished (the resumed pipeline exited 0)
  orphans    [{"pid", "cmdline"}] processes of the run still alive after it ended (must be [])
  lost       ["what"] results complete before a kill and missing or corrupt after it (must be [])
  accuracy   {"chaos": {stage: acc}, "uninterrupted": {stage: acc}}
  noise      the noise seeds' stage accuracies, their range per stage with the uninterrupted
             run (seed 0), the binomial standard error of a held-out accuracy, and per stage
             whether the chaos run is within noise: |chaos - uninterrupted| <= that range
  within_noise  true when every stage is (null when no noise seed was run)
  failures, uninterrupted_failures   exits we did not cause (Ray timing out at startup on a
             loaded machine), each followed by a resume

Each kill falls at a seeded random moment --window seconds after the latest of: the (re)start,
the previous kill, and the moment its target first appeared (an engine only exists in RL
stages), so the kills spread over the run instead of bunching where the target appears.

A kill of an engine actor or a reward worker is survived in place (Ray restarts the actor,
the pool a worker); a kill of the pipeline process is followed by `--resume`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "configs" / "recipes" / "keye.yaml"
# The recipe shortened to fit a session on a shared 2-core machine: the demo's data and SFT (which
# stops by measurement at 40% dev accuracy), RL rounds of 15 steps instead of 60, RFT on 150
# prompts with 100 SFT steps instead of 500 / 300, the filter on 300 prompts instead of 1000;
# checkpoints every 3 RL steps, so a kill loses little. Every stage still learns (docs/reliability.md).
SHORT = ["stages.sft.values.train.save_steps=100",
         "stages.rl1.values.train.steps=15", "stages.rl2.values.train.steps=15",
         "stages.rl1.values.train.checkpoint_every=3", "stages.rl2.values.train.checkpoint_every=3",
         "stages.rft.values.data.max_prompts=150", "stages.rft.values.sft.train.max_steps=100",
         "stages.filter.values.data.max_prompts=300", "defaults.rl.engine.cpu_threads=0-0", "report=false"]
FIRST = "sft"  # the stage the chaos and noise runs take from the uninterrupted run


def later_seed_overrides(seed: int) -> list[str]:
    """Seed `seed` for every stage after SFT (training, RFT and filter sampling); data and SFT unchanged."""
    return [f"defaults.rl.train.seed={seed}", f"defaults.rft.sft.train.seed={seed}",
            f"defaults.rft.sampling.seed={seed}", f"defaults.filter.sampling.seed={seed}"]


# One OpenMP thread per process (torch in the pipeline, the engine bound to one core above): on a
# shared 2-core machine two threads per process spin at every barrier while the other is descheduled.
# It also makes the numbers independent of the core count (docs/reproducibility.md).
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
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


def failed_stage(run: Path) -> str | None:
    state_file = run / "pipeline_state.json"
    try:
        stages = json.loads(state_file.read_text()).get("stages", {}) if state_file.is_file() else {}
    except json.JSONDecodeError:
        return None
    return next((n for n, r in stages.items() if r.get("status") != "done"), None)


def start(run: Path, overrides: list[str], resume: bool, log) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "posttrain.cli", "pipeline", "--config", str(RECIPE), *overrides]
    cmd += ["--resume", str(run)] if resume else ["--run-dir", str(run)]
    env = {**os.environ, **THREADS, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stage_accuracies(run: Path) -> dict[str, Any]:
    summary = run / "summary.json"
    if not summary.is_file():
        return {}
    return {s["name"]: s["accuracy"] for s in json.loads(summary.read_text())["stages"]}


def chaos_run(run: Path, overrides: list[str], seed: int, window: tuple[float, float], log,
              resume: bool = False) -> dict[str, Any]:
    """Run (`resume`: continue) the pipeline in `run` while killing KINDS in turn."""
    rng = random.Random(seed)
    kills: list[dict[str, Any]] = []
    lost: list[str] = []
    seen: dict[int, tuple[float, str]] = {}  # pid -> (create_time, cmdline) of every process of the run
    proc, attempt, resumes = start(run, overrides, resume, log), 1, 0
    failures: list[dict[str, Any]] = []  # exits we did not cause (e.g. Ray timing out at startup under load)
    t0 = clock = time.monotonic()  # t0: this attempt's start; clock: when the next kill's delay starts

    def resume_after_failure() -> bool:
        """The run ended by itself with an error: resume it (a bounded number of times)."""
        nonlocal proc, attempt, resumes, t0
        code = proc.poll()
        if code in (0, 2) or len(failures) >= 3:
            return False
        failures.append({"exit_code": code, "stage": running_stage(run) or failed_stage(run), "attempt": attempt})
        proc, attempt, resumes, t0 = start(run, overrides, True, log), attempt + 1, resumes + 1, time.monotonic()
        return True

    for kind in KINDS:
        delay = rng.uniform(*window)
        target, appeared = None, None
        while proc.poll() is None or resume_after_failure():
            for p in descendants(proc.pid):
                try:
                    seen.setdefault(p.pid, (p.create_time(), " ".join(p.cmdline())))
                except psutil.NoSuchProcess:
                    pass
            target = find_target(kind, proc.pid)
            if target is not None and appeared is None:
                appeared = time.monotonic()
            if target is None:
                appeared = None
            elif time.monotonic() - max(clock, appeared) >= delay:
                break
            time.sleep(0.2)
        if proc.poll() is not None:
            break  # the run finished before this kill
        before = complete_results(run)
        kills.append({"kind": kind, "pid": target.pid, "at_s": round(time.monotonic() - t0, 1),
                      "stage": running_stage(run), "attempt": attempt})
        try:
            target.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:  # it ended between the check and the kill: not a kill
            kills.pop()
            continue
        if kind == "pipeline":
            proc.wait()
            time.sleep(2.0)
            lost += lost_after(before, run)
            proc, attempt, resumes = start(run, overrides, True, log), attempt + 1, resumes + 1
            t0 = time.monotonic()
        else:
            time.sleep(1.0)
            lost += lost_after(before, run)
        clock = time.monotonic()
    proc.wait()
    while resume_after_failure():
        proc.wait()
    code = proc.poll()
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
            "orphans": orphans, "lost": lost, "exit_code": code, "failures": failures}


def uninterrupted(run: Path, overrides: list[str], log, resume: bool = False) -> list[dict[str, Any]]:
    """Run (`resume`: continue) the pipeline in `run` to its end; the failures it was resumed
    after: an exit it made by itself (Ray timing out at startup under load) is resumed, at most
    twice, and reported, since a resume mid-stage is an interruption."""
    failures: list[dict[str, Any]] = []
    if not resume and (run / "pipeline.yaml").is_file():  # an earlier call's run, stopped before it ended
        failures.append({"exit_code": None, "stage": failed_stage(run), "note": "found unfinished; resumed"})
        resume = True
    while not (run / "summary.json").is_file() and len(failures) <= 2:
        if not resume and run.exists():
            shutil.rmtree(run)
        code = start(run, overrides, resume, log).wait()
        if code != 0:
            failures.append({"exit_code": code, "stage": failed_stage(run)})
        resume = True
    return failures


def snapshot_first_stage(run: Path, base: Path) -> None:
    """Copy what the first stage left (data, initial model, its stage folder, the pipeline config)
    to `base`, with a pipeline state that holds only that stage: a `--resume` from a copy of it in
    `run`'s path skips the stage (same config hash) and runs every later one afresh."""
    state = json.loads((run / "pipeline_state.json").read_text())
    later = [n for n in state["stages"] if n != FIRST]
    if base.exists():
        shutil.rmtree(base)
    shutil.copytree(run, base, symlinks=True,
                    ignore=lambda d, names: [n for n in names if Path(d) == run and (n in later or n in (
                        "summary.json", "report.html", "tensorboard"))])
    state["stages"] = {FIRST: state["stages"][FIRST]}
    (base / "pipeline_state.json").write_text(json.dumps(state, indent=2) + "\n")


def from_snapshot(base: Path, run: Path) -> None:
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(base, run, symlinks=True)


def move(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    src.rename(dst)


def noise(ref: dict[str, Any], others: dict[int, dict[str, Any]], chaos: dict[str, Any], eval_rows: int
          ) -> dict[str, Any]:
    """How far uninterrupted runs move, and whether the chaos run's accuracies are within that.

    Runs are deterministic per machine for a seed (docs/reproducibility.md), so the noise is the
    spread over seeds: per stage, max - min of the uninterrupted runs' accuracies (seed 0 = ref and
    `others`, which share ref's SFT and change the seeds of every later stage); a stage is within
    noise when |chaos - ref| <= that range. The binomial standard error of a held-out accuracy on
    `eval_rows` rows is reported next to it.

    >>> n = noise({"sft": 0.4, "rl": 0.6}, {1: {"sft": 0.45, "rl": 0.7}}, {"sft": 0.42, "rl": 0.5}, 100)
    >>> n["seed_range"], n["chaos_minus_uninterrupted"], n["within_noise"], n["binomial_se"]["sft"]
    ({'sft': 0.05, 'rl': 0.1}, {'sft': 0.02, 'rl': -0.1}, {'sft': True, 'rl': True}, 0.049)
    """
    by_seed = {0: ref, **others}
    rng = {s: round(max(r[s] for r in by_seed.values()) - min(r[s] for r in by_seed.values()), 6)
           for s in ref if all(r.get(s) is not None for r in by_seed.values())} if len(by_seed) > 1 else {}
    diff = {s: round(chaos[s] - ref[s], 6) for s in ref if chaos.get(s) is not None and ref[s] is not None}
    return {"how": "range (max - min) per stage over uninterrupted runs from the same SFT model with the "
                   f"later stages' seeds {sorted(by_seed)} (0 = the uninterrupted run); within noise: "
                   "|chaos - uninterrupted| <= that range",
            "uninterrupted_by_seed": {str(k): v for k, v in by_seed.items()},
            "seed_range": rng, "eval_rows": eval_rows,
            "binomial_se": {s: round((a * (1 - a) / eval_rows) ** 0.5, 3) for s, a in ref.items() if a is not None},
            "chaos_minus_uninterrupted": diff,
            "within_noise": {s: abs(d) <= rng[s] + 1e-9 for s, d in diff.items() if s in rng}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "chaos")
    ap.add_argument("--seed", type=int, default=0, help="seeds the kill moments (not the training)")
    ap.add_argument("--window", type=float, nargs=2, default=(20.0, 90.0),
                    help="seconds after a (re)start, the previous kill or the target's appearance "
                         "within which each kill falls")
    ap.add_argument("--noise-seeds", type=int, nargs="*", default=[1, 2],
                    help="seeds of the stages after SFT in the extra uninterrupted runs that measure "
                         "noise (run after the chaos run, each kept in OUT/noise-seed-N for the next call)")
    ap.add_argument("overrides", nargs="*", help="recipe overrides after the shortening ones")
    a = ap.parse_args(argv)
    overrides = [*SHORT, *a.overrides]
    a.out.mkdir(parents=True, exist_ok=True)
    work, base, ref = a.out / "ref", a.out / f"{FIRST}-snapshot", a.out / "uninterrupted"
    with (a.out / "chaos.log").open("a") as log:
        if not ((ref / "summary.json").is_file() and base.is_dir()):  # the uninterrupted run, once
            ref_failures = uninterrupted(work, overrides, log)
            snapshot_first_stage(work, base)
            move(work, ref)
            (ref / "failures.json").write_text(json.dumps(ref_failures) + "\n")
        ref_acc = stage_accuracies(ref)
        from_snapshot(base, work)
        result = chaos_run(work, overrides, a.seed, tuple(a.window), log, resume=True)
        move(work, a.out / "run")
        chaos_acc = stage_accuracies(a.out / "run")
        result["accuracy"] = {"chaos": chaos_acc, "uninterrupted": ref_acc}
        result["uninterrupted_failures"] = {"uninterrupted": json.loads((ref / "failures.json").read_text())}
        eval_file = ref / "data" / "eval.jsonl"
        eval_rows = sum(1 for _ in eval_file.open()) if eval_file.is_file() else 0
        others: dict[int, dict[str, Any]] = {}
        for s in [None, *a.noise_seeds]:  # the summary is written before each noise run and after the last
            if s is not None:
                done = a.out / f"noise-seed-{s}"
                if not (done / "summary.json").is_file():
                    from_snapshot(base, work)
                    fails = uninterrupted(work, [*overrides, *later_seed_overrides(s)], log, resume=True)
                    move(work, done)
                    (done / "failures.json").write_text(json.dumps(fails) + "\n")
                others[s] = stage_accuracies(done)
                result["uninterrupted_failures"][done.name] = json.loads((done / "failures.json").read_text())
            result["noise"] = noise(ref_acc, others, chaos_acc, eval_rows)
            within = result["noise"]["within_noise"]
            result["within_noise"] = all(within.values()) if within else None
            (a.out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    kinds = {k["kind"] for k in result["kills"]}
    ok = (result["completed"] and not result["orphans"] and not result["lost"] and len(result["kills"]) >= 4
          and len(kinds) >= 3 and result["within_noise"] is not False)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
