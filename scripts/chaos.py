"""`make chaos`: the Keye recipe (configs/recipes/keye.yaml, shortened by overrides) while a
driver SIGKILLs, at seeded random moments and in turn, the pipeline process, a rollout
engine actor and a reward worker, then, in a shorter leg, a trainer worker of the sharded
trainer; after a pipeline or trainer-worker kill it resumes with `--resume`.

The runs (all in RUN/ref, then moved, because a stage's config hash covers its paths):
  RUN/uninterrupted  the recipe, start to end, no kill
  RUN/run            the chaos run: from the uninterrupted run's SFT stage (a copy: the same
                     SFT model, so the kills, which fall in the stages after it, are compared
                     on equal footing; SFT kills and resumes are tested in
                     tests/posttrain/pipeline/test_pipeline_resume.py), then every later stage
                     while the driver kills
  RUN/noise-seed-N   from the same SFT, the later stages uninterrupted with training and
                     sampling seed N (--noise-seeds): how far the results move by seed alone

  RUN/trainer-worker/{uninterrupted,run}  the trainer-worker leg (below)

The trainer-worker leg: the recipe cut to its SFT and first RL stage (`rl1`, shortened as above),
with `trainer.num_workers=2 trainer.strategy=ddp` in rl1, so the policy trains in two Ray actors
(`ray::PolicyWorker`, posttrain/rl/workers.py); from the same SFT copy, run uninterrupted and
with one SIGKILL of a PolicyWorker process at a seeded moment --leg-window seconds (5-30) after
rl1's first checkpoint. Killing a worker
breaks the group: the pipeline must stop by itself with an error naming the worker (within
trainer.timeout_s, recorded as `stopped_after_s` and `exit_code` in the kill), after which the
driver resumes with `--resume` from the last (sharded) checkpoint. Why a separate leg and not
every run with two workers: the main runs keep the single-process trainer of `make demo` (whose
results and cached reference runs they compare with), and running the reference and both noise
runs again with workers would double the script's cost; the leg adds one RL stage twice. Its
noise is not measured separately: its accuracy difference is set against the main noise runs'
rl1 seed range (single-process trainer, same SFT, same steps).

Dtypes are pinned to float32 (`DTYPES`: model.dtype and engine.dtype of every stage kind that has
them), so the demo's default (`auto` since issue 20: bf16 on AMX CPUs) does not change what the
chaos and reference runs compare from one CPU to another. (Cached runs made while float32 was the
default keep their hashes: the pin gives the same configs.)

`--only trainer-worker` runs just that leg (and, when no SFT copy exists yet, the recipe's SFT
alone to make one) and writes RUN/trainer-worker/summary.json; a full call writes it too and
folds the leg into RUN/summary.json.

Writes RUN/summary.json (RUN = --out, default runs/chaos):
  kills      [{"kind", "pid", "at_s" (since that attempt's start), "stage", "attempt"}], the
             trainer-worker leg's with "leg": "trainer_worker", "exit_code", "stopped_after_s"
  resumes    number of `--resume` restarts (both)
  completed  true when the final stage finished (the resumed pipeline exited 0), in both
  orphans    [{"pid", "cmdline"}] processes of the run still alive after it ended (must be [])
  lost       ["what"] results complete before a kill and missing or corrupt after it (must be [])
             (orphans and lost of both, the leg's entries prefixed "trainer_worker: " in lost)
  accuracy   {"chaos": {stage: acc}, "uninterrupted": {stage: acc}}
  trainer_worker  the leg: its overrides, kills, resumes, completed, orphans, lost, failures,
             accuracy {"chaos": {stage: acc}, "uninterrupted": {stage: acc}},
             chaos_minus_uninterrupted, and within_noise (|difference| <= the main rl1 seed range)
  noise      the noise seeds' stage accuracies, their range per stage with the uninterrupted
             run (seed 0), the binomial standard error of a held-out accuracy, and per stage
             whether the chaos run is within noise: |chaos - uninterrupted| <= that range
  within_noise  true when every stage is, the leg's rl1 included (null when no noise seed was run)
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
import yaml

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
# float32 everywhere, whatever the shipped default (see the docstring); sft, rl, rft and filter
# stages all have model.dtype, the three that sample also engine.dtype (EngineConfig)
DTYPES = [f"defaults.{kind}.{section}.dtype=float32" for kind, sections in (
    ("sft", ("model",)), ("rl", ("model", "engine")), ("rft", ("model", "engine")),
    ("filter", ("model", "engine"))) for section in sections]
FIRST = "sft"  # the stage the chaos and noise runs take from the uninterrupted run
# The trainer-worker leg: the recipe's stages up to its first RL stage, that stage with 2 DDP
# workers (3 logical Ray CPUs: 2 workers + the engine; OpenMP threads stay one per process), a dead
# worker noticed within 300 s at the latest.
LEG_STAGES = ("sft", "rl1")
LEG = ["stages.rl1.values.trainer.num_workers=2", "stages.rl1.values.trainer.strategy=ddp",
       "stages.rl1.values.trainer.timeout_s=300", "stages.rl1.values.ray.num_cpus=3"]
# The worker is killed this many seconds after rl1's first checkpoint (step 3 of 15): soon enough
# that the stage is still training on a quiet machine (a few seconds a step), late enough that the
# resume restores a sharded checkpoint.
LEG_WINDOW = (5.0, 30.0)


def later_seed_overrides(seed: int) -> list[str]:
    """Seed `seed` for every stage after SFT (training, RFT and filter sampling); data and SFT unchanged."""
    return [f"defaults.rl.train.seed={seed}", f"defaults.rft.sft.train.seed={seed}",
            f"defaults.rft.sampling.seed={seed}", f"defaults.filter.sampling.seed={seed}"]


# One OpenMP thread per process (torch in the pipeline, the engine bound to one core above): on a
# shared 2-core machine two threads per process spin at every barrier while the other is descheduled.
# It also makes the numbers independent of the core count (docs/reproducibility.md).
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
KINDS = ("pipeline", "engine", "reward_worker", "pipeline")
LEG_KINDS = ("trainer_worker",)
MARKERS = {"engine": "ray::_EngineActor", "reward_worker": "rewards.worker", "trainer_worker": "ray::PolicyWorker"}
# kills after which the pipeline process ends (killed, or stopping by itself on a dead trainer
# worker) and is resumed; the others are survived in place
RESUMED = {"pipeline", "trainer_worker"}


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


def start(run: Path, overrides: list[str], resume: bool, log, recipe: Path = RECIPE) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "posttrain.cli", "pipeline", "--config", str(recipe), *overrides]
    cmd += ["--resume", str(run)] if resume else ["--run-dir", str(run)]
    env = {**os.environ, **THREADS, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def stage_accuracies(run: Path) -> dict[str, Any]:
    summary = run / "summary.json"
    if not summary.is_file():
        return {}
    return {s["name"]: s["accuracy"] for s in json.loads(summary.read_text())["stages"]}


def has_checkpoint(run: Path) -> bool:
    """The running stage has written a checkpoint (a trainer-worker kill then resumes from it)."""
    stage = running_stage(run)
    return stage is not None and (run / stage / "checkpoints" / "latest").is_file()


def chaos_run(run: Path, overrides: list[str], seed: int, window: tuple[float, float], log,
              resume: bool = False, kinds: tuple[str, ...] = KINDS, recipe: Path = RECIPE,
              stop_timeout_s: float = 420.0) -> dict[str, Any]:
    """Run (`resume`: continue) the pipeline in `run` while killing `kinds` in turn. A trainer
    worker's target appears only once the running stage has a checkpoint; after its kill the
    pipeline must end by itself within `stop_timeout_s` (else it is killed and that is a failure)."""
    rng = random.Random(seed)
    kills: list[dict[str, Any]] = []
    lost: list[str] = []
    seen: dict[int, tuple[float, str]] = {}  # pid -> (create_time, cmdline) of every process of the run
    proc, attempt, resumes = start(run, overrides, resume, log, recipe), 1, 0
    failures: list[dict[str, Any]] = []  # exits we did not cause (e.g. Ray timing out at startup under load)
    t0 = clock = time.monotonic()  # t0: this attempt's start; clock: when the next kill's delay starts

    def resume_after_failure() -> bool:
        """The run ended by itself with an error: resume it (a bounded number of times)."""
        nonlocal proc, attempt, resumes, t0
        code = proc.poll()
        if code in (0, 2) or len(failures) >= 3:
            return False
        failures.append({"exit_code": code, "stage": running_stage(run) or failed_stage(run), "attempt": attempt})
        proc, attempt, resumes, t0 = start(run, overrides, True, log, recipe), attempt + 1, resumes + 1, time.monotonic()
        return True

    for kind in kinds:
        delay = rng.uniform(*window)
        target, appeared = None, None
        while proc.poll() is None or resume_after_failure():
            for p in descendants(proc.pid):
                try:
                    seen.setdefault(p.pid, (p.create_time(), " ".join(p.cmdline())))
                except psutil.NoSuchProcess:
                    pass
            target = find_target(kind, proc.pid)
            if kind == "trainer_worker" and not has_checkpoint(run):
                target = None
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
        if kind in RESUMED:
            killed_at = time.monotonic()
            try:
                code = proc.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:  # the run hangs on the dead worker: a failure of the run
                proc.kill()
                proc.wait()
                code = None
                failures.append({"exit_code": None, "stage": kills[-1]["stage"], "attempt": attempt,
                                 "note": f"still running {stop_timeout_s:.0f} s after the {kind} kill; killed"})
            if kind != "pipeline":
                kills[-1].update(exit_code=code, stopped_after_s=round(time.monotonic() - killed_at, 1))
            time.sleep(2.0)
            lost += lost_after(before, run)
            proc, attempt, resumes = start(run, overrides, True, log, recipe), attempt + 1, resumes + 1
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


def uninterrupted(run: Path, overrides: list[str], log, resume: bool = False, recipe: Path = RECIPE
                  ) -> list[dict[str, Any]]:
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
        code = start(run, overrides, resume, log, recipe).wait()
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


def trimmed_recipe(stages: tuple[str, ...], out: Path) -> Path:
    """The recipe with only `stages` (in its order), written to `out`; paths in it stay relative to
    the repo, where the pipeline runs. A kept stage resolves exactly as in the whole recipe (its
    hash covers its own config and its sources'), so the SFT copy's stage is skipped on resume."""
    raw = yaml.safe_load(RECIPE.read_text())
    raw["stages"] = {n: spec for n, spec in raw["stages"].items() if n in stages}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def overrides_for(stages: tuple[str, ...], overrides: list[str]) -> list[str]:
    """`overrides` without those of stages outside `stages` (which would add a stage with no kind)."""
    return [o for o in overrides if not o.startswith("stages.") or o.split(".")[1] in stages]


def leg_verdict(leg: dict[str, Any], seed_range: dict[str, float]) -> dict[str, Any]:
    """The leg's accuracy difference per stage and, where the main noise runs measured a seed range
    for that stage, whether the difference is within it.

    >>> v = leg_verdict({"accuracy": {"chaos": {"sft": 0.5, "rl1": 0.7}, "uninterrupted": {"sft": 0.5, "rl1": 0.72}}},
    ...                 {"sft": 0.0, "rl1": 0.05})
    >>> v["chaos_minus_uninterrupted"], v["within_noise"]
    ({'sft': 0.0, 'rl1': -0.02}, {'sft': True, 'rl1': True})
    """
    chaos, ref = leg["accuracy"]["chaos"], leg["accuracy"]["uninterrupted"]
    diff = {s: round(chaos[s] - ref[s], 6) for s in ref if chaos.get(s) is not None and ref[s] is not None}
    return {"chaos_minus_uninterrupted": diff,
            "within_noise": {s: abs(d) <= seed_range[s] + 1e-9 for s, d in diff.items() if s in seed_range}}


def leg_ok(leg: dict[str, Any]) -> bool:
    """The leg passes when it finished with no orphan and nothing lost after a trainer-worker kill
    that stopped the pipeline with an error (a run that hangs or exits 0 on a dead worker fails)."""
    tw = [k for k in leg["kills"] if k["kind"] == "trainer_worker"]
    return (leg["completed"] and not leg["orphans"] and not leg["lost"] and bool(tw)
            and all(k.get("exit_code") not in (0, None) for k in tw))


def trainer_worker_leg(out: Path, base: Path, overrides: list[str], seed: int, window: tuple[float, float],
                       log) -> dict[str, Any]:
    """The trainer-worker leg (module docstring), from the SFT copy `base`: OUT/trainer-worker/
    uninterrupted once (kept for the next call), then the chaos run; writes its summary.json."""
    leg, work = out / "trainer-worker", out / "ref"
    recipe = trimmed_recipe(LEG_STAGES, leg / "recipe.yaml")
    ov = [*overrides_for(LEG_STAGES, overrides), *LEG]
    ref = leg / "uninterrupted"
    if not (ref / "summary.json").is_file():
        from_snapshot(base, work)
        fails = uninterrupted(work, ov, log, resume=True, recipe=recipe)
        move(work, ref)
        (ref / "failures.json").write_text(json.dumps(fails) + "\n")
    from_snapshot(base, work)
    result = chaos_run(work, ov, seed, window, log, resume=True, kinds=LEG_KINDS, recipe=recipe)
    move(work, leg / "run")
    for k in result["kills"]:
        k["leg"] = "trainer_worker"
    result["overrides"] = LEG
    result["accuracy"] = {"chaos": stage_accuracies(leg / "run"), "uninterrupted": stage_accuracies(ref)}
    result["uninterrupted_failures"] = json.loads((ref / "failures.json").read_text())
    result.update(leg_verdict(result, {}))
    result["within_noise"] = None
    (leg / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def fold_leg(result: dict[str, Any], leg: dict[str, Any]) -> None:
    """The leg's kills, resumes, completion, orphans, lost and failures into the main summary's
    fields; the leg itself under `trainer_worker`."""
    result["kills"] = [*result["kills"], *leg["kills"]]
    result["resumes"] += leg["resumes"]
    result["completed"] = result["completed"] and leg["completed"]
    result["orphans"] = [*result["orphans"], *leg["orphans"]]
    result["lost"] = [*result["lost"], *(f"trainer_worker: {x}" for x in leg["lost"])]
    result["failures"] = [*result["failures"], *({**f, "leg": "trainer_worker"} for f in leg["failures"])]
    result["trainer_worker"] = leg


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
    ap.add_argument("--leg-window", type=float, nargs=2, default=LEG_WINDOW,
                    help="seconds after rl1's first checkpoint within which the trainer worker is killed")
    ap.add_argument("--only", choices=["all", "trainer-worker"], default="all",
                    help="trainer-worker: only the trainer-worker leg (and the SFT it starts from)")
    ap.add_argument("overrides", nargs="*", help="recipe overrides after the shortening ones")
    a = ap.parse_args(argv)
    overrides = [*SHORT, *DTYPES, *a.overrides]
    a.out.mkdir(parents=True, exist_ok=True)
    work, base, ref = a.out / "ref", a.out / f"{FIRST}-snapshot", a.out / "uninterrupted"
    with (a.out / "chaos.log").open("a") as log:
        if a.only == "trainer-worker":
            if not base.is_dir():  # the recipe's SFT alone: the same stage (same hash) as in the whole recipe
                sft_only = trimmed_recipe((FIRST,), a.out / "sft-recipe.yaml")
                uninterrupted(work, overrides_for((FIRST,), overrides), log, recipe=sft_only)
                snapshot_first_stage(work, base)
                shutil.rmtree(work)
            leg = trainer_worker_leg(a.out, base, overrides, a.seed, tuple(a.leg_window), log)
            print(json.dumps(leg, indent=2))
            return 0 if leg_ok(leg) else 1
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
        fold_leg(result, trainer_worker_leg(a.out, base, overrides, a.seed, tuple(a.leg_window), log))
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
            tw = result["trainer_worker"]
            tw["within_noise"] = leg_verdict(tw, result["noise"]["seed_range"])["within_noise"] or None
            within = result["noise"]["within_noise"]
            result["within_noise"] = all([*within.values(), *(tw["within_noise"] or {}).values()]) if within else None
            (a.out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    kinds = {k["kind"] for k in result["kills"]}
    ok = (result["completed"] and not result["orphans"] and not result["lost"] and len(result["kills"]) >= 4
          and len(kinds) >= 3 and result["within_noise"] is not False and leg_ok(result["trainer_worker"]))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
