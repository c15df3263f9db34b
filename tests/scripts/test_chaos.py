"""`make chaos` bookkeeping (scripts/chaos.py) without a run: what counts as lost after a
kill, which process a kill targets, and the summary's contract keys."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("chaos", ROOT / "scripts" / "chaos.py")
chaos = importlib.util.module_from_spec(spec)
spec.loader.exec_module(chaos)


def _stage(run: Path, name: str, status: str, step: int | None = None) -> None:
    d = run / name
    (d / "final").mkdir(parents=True)
    (d / "summary.json").write_text(json.dumps({"steps": 3}))
    (d / "final" / "model.safetensors").write_bytes(b"weights")
    if step is not None:
        ck = d / "checkpoints" / f"step-{step:06d}"
        (ck / "model").mkdir(parents=True)
        (ck / "trainer.pt").write_bytes(b"state")
        (d / "checkpoints" / "latest").write_text(ck.name + "\n")
    state = json.loads((run / "pipeline_state.json").read_text()) if (run / "pipeline_state.json").exists() else {
        "stages": {}}
    state["stages"][name] = {"status": status}
    (run / "pipeline_state.json").write_text(json.dumps(state))


def test_lost_is_what_was_complete_and_is_missing_or_changed_after(tmp_path):
    _stage(tmp_path, "sft", "done")
    _stage(tmp_path, "rl1", "running", step=3)
    before = chaos.complete_results(tmp_path)
    assert set(before) == {"sft/summary.json", "sft/final/model.safetensors", "rl1/checkpoints/latest"}
    assert chaos.lost_after(before, tmp_path) == []
    (tmp_path / "rl1" / "checkpoints" / "latest").write_text("step-000006\n")  # names nothing complete
    (tmp_path / "sft" / "final" / "model.safetensors").write_bytes(b"random")
    (tmp_path / "sft" / "summary.json").unlink()
    assert sorted(chaos.lost_after(before, tmp_path)) == [
        "rl1/checkpoints/latest (names no complete checkpoint)", "sft/final/model.safetensors (changed)",
        "sft/summary.json (missing)"]


def test_targets_are_found_among_the_runs_processes_by_command_line():
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen("
                               "[sys.executable, '-c', 'import time; time.sleep(30)', 'rewards.worker']); "
                               "time.sleep(30)"])
    try:
        for _ in range(100):
            worker = chaos.find_target("reward_worker", parent.pid)
            if worker is not None:
                break
            import time
            time.sleep(0.05)
        assert worker is not None and "rewards.worker" in " ".join(worker.cmdline())
        assert chaos.find_target("engine", parent.pid) is None
        assert chaos.find_target("pipeline", parent.pid).pid == parent.pid
    finally:
        for p in chaos.descendants(parent.pid):
            p.kill()
        parent.kill()
        parent.wait()


def test_the_kill_plan_covers_three_kinds_and_four_kills():
    assert len(chaos.KINDS) >= 4 and len(set(chaos.KINDS)) >= 3


def test_noise_is_the_spread_over_seeds_and_a_bigger_difference_is_outside_it():
    ref, seed1, seed2 = {"sft": 0.40, "rl1": 0.60}, {"sft": 0.46, "rl1": 0.62}, {"sft": 0.43, "rl1": 0.66}
    n = chaos.noise(ref, {1: seed1, 2: seed2}, {"sft": 0.45, "rl1": 0.53}, 200)
    assert n["seed_range"] == {"sft": 0.06, "rl1": 0.06}
    assert n["chaos_minus_uninterrupted"] == {"sft": 0.05, "rl1": -0.07}
    assert n["within_noise"] == {"sft": True, "rl1": False}
    assert n["binomial_se"] == {"sft": 0.035, "rl1": 0.035}
    assert chaos.noise(ref, {}, ref, 200)["within_noise"] == {}  # one seed measures no noise


def test_the_snapshot_keeps_the_first_stage_and_drops_every_later_one(tmp_path):
    run, base = tmp_path / "ref", tmp_path / "snap"
    run.mkdir()
    _stage(run, "sft", "done")
    _stage(run, "rl1", "done", step=3)
    for name in ("pipeline.yaml", "summary.json"):
        (run / name).write_text("x\n")
    (run / "init_model").mkdir()
    chaos.snapshot_first_stage(run, base)
    assert sorted(p.name for p in base.iterdir()) == ["init_model", "pipeline.yaml", "pipeline_state.json", "sft"]
    assert list(json.loads((base / "pipeline_state.json").read_text())["stages"]) == ["sft"]
    assert (base / "sft" / "final" / "model.safetensors").read_bytes() == b"weights"
    assert (run / "rl1").is_dir()  # the source is left as it was


# ---------------------------------------------------------------------------- the trainer-worker leg

# A stand-in for `posttrain pipeline` in the leg: its first attempt runs stage rl1 with a checkpoint
# and a child whose command line is a PolicyWorker's, and (like the real driver on WorkerFailed)
# exits 1 when that worker dies, or, with HANG, keeps running; a later attempt (the --resume)
# finishes the run.
FAKE_PIPELINE = """
import json, pathlib, subprocess, sys, time
run, hang = pathlib.Path(sys.argv[1]), sys.argv[2] == "1"
ck = run / "rl1" / "checkpoints"
(ck / "step-000003").mkdir(parents=True, exist_ok=True)
(ck / "step-000003" / "trainer.pt").write_bytes(b"state")
(ck / "latest").write_text("step-000003\\n")
attempts = run / "attempts"
n = int(attempts.read_text()) + 1 if attempts.exists() else 1
attempts.write_text(str(n))
if n > 1:
    (run / "pipeline_state.json").write_text(json.dumps({"stages": {"sft": {"status": "done"}, "rl1": {"status": "done"}}}))
    (run / "summary.json").write_text(json.dumps({"stages": [{"name": "sft", "accuracy": 0.5}, {"name": "rl1", "accuracy": 0.7}]}))
    sys.exit(0)
(run / "pipeline_state.json").write_text(json.dumps({"stages": {"sft": {"status": "done"}, "rl1": {"status": "running"}}}))
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "ray::PolicyWorker"])
while worker.poll() is None or hang:
    time.sleep(0.05)
sys.exit(1)
"""


def _fake_start(hang: bool):
    def start(run, overrides, resume, log, recipe=chaos.RECIPE):
        return subprocess.Popen([sys.executable, "-c", FAKE_PIPELINE, str(run), "1" if hang else "0"])
    return start


def test_a_trainer_worker_kill_waits_for_the_pipeline_to_stop_then_resumes_it(tmp_path, monkeypatch):
    monkeypatch.setattr(chaos, "start", _fake_start(hang=False))
    leg = chaos.chaos_run(tmp_path, [], seed=0, window=(0.5, 0.5), log=None, resume=True, kinds=chaos.LEG_KINDS)
    assert [(k["kind"], k["stage"], k["attempt"], k["exit_code"]) for k in leg["kills"]] == [
        ("trainer_worker", "rl1", 1, 1)]
    assert leg["kills"][0]["stopped_after_s"] < 10
    assert (leg["resumes"], leg["completed"], leg["orphans"], leg["lost"], leg["failures"]) == (1, True, [], [], [])
    assert (tmp_path / "attempts").read_text() == "2"
    assert chaos.leg_ok({**leg, "kills": [{**leg["kills"][0]}]})


def test_a_pipeline_that_hangs_on_a_dead_trainer_worker_fails_the_leg(tmp_path, monkeypatch):
    monkeypatch.setattr(chaos, "start", _fake_start(hang=True))
    leg = chaos.chaos_run(tmp_path, [], seed=0, window=(0.2, 0.2), log=None, resume=True, kinds=chaos.LEG_KINDS,
                          stop_timeout_s=1.0)
    assert leg["kills"][0]["exit_code"] is None and "still running 1 s after" in leg["failures"][0]["note"]
    assert leg["completed"]  # the resume finished it, but a hang is no clean stop
    assert not chaos.leg_ok(leg)
    assert not chaos.leg_ok({**leg, "kills": [{**leg["kills"][0], "exit_code": 0}]})  # a dead worker is no success


def test_the_trainer_worker_is_found_by_its_ray_command_line():
    parent = subprocess.Popen([sys.executable, "-c", "import subprocess, sys, time; subprocess.Popen("
                               "[sys.executable, '-c', 'import time; time.sleep(30)', 'ray::PolicyWorker.update']); "
                               "time.sleep(30)"])
    try:
        worker = None
        for _ in range(100):
            worker = chaos.find_target("trainer_worker", parent.pid)
            if worker is not None:
                break
            time.sleep(0.05)
        assert worker is not None and worker.pid != parent.pid
        assert chaos.find_target("reward_worker", parent.pid) is None
    finally:
        for p in chaos.descendants(parent.pid):
            p.kill()
        parent.kill()
        parent.wait()


def test_the_leg_folds_into_the_summary_fields_and_keeps_every_contract_key():
    main = {"kills": [{"kind": "pipeline"}], "resumes": 2, "completed": True, "orphans": [], "lost": [],
            "failures": [], "exit_code": 0, "accuracy": {"chaos": {"rl1": 0.7}, "uninterrupted": {"rl1": 0.7}}}
    leg = {"kills": [{"kind": "trainer_worker", "leg": "trainer_worker", "exit_code": 1}], "resumes": 1,
           "completed": False, "orphans": [{"pid": 7, "cmdline": "ray::PolicyWorker"}], "lost": ["rl1/x (missing)"],
           "failures": [{"exit_code": 1}], "accuracy": {"chaos": {"rl1": 0.6}, "uninterrupted": {"rl1": 0.65}}}
    chaos.fold_leg(main, leg)
    assert [k["kind"] for k in main["kills"]] == ["pipeline", "trainer_worker"]
    assert (main["resumes"], main["completed"]) == (3, False)
    assert main["orphans"] == leg["orphans"] and main["lost"] == ["trainer_worker: rl1/x (missing)"]
    assert main["failures"] == [{"exit_code": 1, "leg": "trainer_worker"}]
    assert main["accuracy"] == {"chaos": {"rl1": 0.7}, "uninterrupted": {"rl1": 0.7}}  # the main runs' own
    assert main["trainer_worker"]["accuracy"]["chaos"] == {"rl1": 0.6}
    v = chaos.leg_verdict(leg, {"rl1": 0.04})
    assert v == {"chaos_minus_uninterrupted": {"rl1": -0.05}, "within_noise": {"rl1": False}}


def test_the_leg_and_sft_only_recipes_keep_the_sft_stage_and_pinned_dtypes_change_no_hash(tmp_path):
    """The leg resumes from the SFT copy only if its SFT stage hashes as in the whole recipe; the
    float32 pins must reach every stage (model and engine) whatever the demo's default (`auto` now)."""
    from posttrain.pipeline.config import load_pipeline_config, resolve, with_data_defaults

    run = tmp_path / "ref"

    def plan(recipe, overrides):
        return {st.name: st for st in resolve(with_data_defaults(load_pipeline_config(recipe, overrides), run), run)}

    whole = plan(chaos.RECIPE, [*chaos.SHORT, *chaos.DTYPES])
    default = plan(chaos.RECIPE, chaos.SHORT)  # keye.yaml says auto: the pin is a different config
    assert default["rl1"].cfg.model.dtype == "auto" and default["rl1"].hash != whole["rl1"].hash
    for st in whole.values():
        assert st.cfg.model.dtype == "float32", st.name
        assert getattr(getattr(st.cfg, "engine", None), "dtype", "float32") == "float32", st.name
    pinned = plan(chaos.RECIPE, [*chaos.SHORT, "defaults.rl.model.dtype=auto", "defaults.rl.engine.dtype=auto",
                                 *chaos.DTYPES])  # a changed default loses to the pin
    assert (pinned["rl1"].cfg.model.dtype, pinned["rl1"].cfg.engine.dtype) == ("float32", "float32")
    overrides = [*chaos.SHORT, *chaos.DTYPES]
    leg = plan(chaos.trimmed_recipe(chaos.LEG_STAGES, tmp_path / "leg.yaml"),
               [*chaos.overrides_for(chaos.LEG_STAGES, overrides), *chaos.LEG])
    assert list(leg) == ["sft", "rl1"] and leg["sft"].hash == whole["sft"].hash
    assert (leg["rl1"].cfg.trainer.num_workers, leg["rl1"].cfg.trainer.strategy) == (2, "ddp")
    assert leg["rl1"].cfg.train.steps == whole["rl1"].cfg.train.steps == 15
    sft_only = plan(chaos.trimmed_recipe((chaos.FIRST,), tmp_path / "sft.yaml"),
                    chaos.overrides_for((chaos.FIRST,), overrides))
    assert list(sft_only) == ["sft"] and sft_only["sft"].hash == whole["sft"].hash


def test_make_chaos_folds_the_leg_into_the_summary_with_every_contract_key(tmp_path, monkeypatch):
    """main() glue, the runs replaced by stand-ins that write what the pipeline writes: the summary
    keeps the contract keys, holds the leg, and the exit code needs the leg to pass."""
    acc = {"sft": 0.485, "rl1": 0.725, "rl2": 0.805}

    def write_run(run, accuracy):
        run.mkdir(parents=True, exist_ok=True)
        (run / "data").mkdir(exist_ok=True)
        (run / "data" / "eval.jsonl").write_text("{}\n" * 200)
        (run / "pipeline_state.json").write_text(json.dumps({"stages": {s: {"status": "done"} for s in accuracy}}))
        (run / "summary.json").write_text(json.dumps({"stages": [{"name": s, "accuracy": a} for s, a in accuracy.items()]}))

    def uninterrupted(run, overrides, log, resume=False, recipe=chaos.RECIPE):
        seed = next((o for o in overrides if o.startswith("defaults.rl.train.seed=")), "=0").split("=")[1]
        write_run(run, {**acc, "rl1": acc["rl1"] - 0.02 * int(seed)})
        return []

    def chaos_run(run, overrides, seed, window, log, resume=False, **kw):
        write_run(run, acc)
        return {"kills": [{"kind": k} for k in chaos.KINDS], "resumes": 2, "completed": True, "orphans": [],
                "lost": [], "exit_code": 0, "failures": []}

    leg = {"kills": [{"kind": "trainer_worker", "leg": "trainer_worker", "exit_code": 1}], "resumes": 1,
           "completed": True, "orphans": [], "lost": [], "failures": [], "within_noise": None,
           "accuracy": {"chaos": {"sft": 0.485, "rl1": 0.725}, "uninterrupted": {"sft": 0.485, "rl1": 0.725}}}
    monkeypatch.setattr(chaos, "uninterrupted", uninterrupted)
    monkeypatch.setattr(chaos, "chaos_run", chaos_run)
    monkeypatch.setattr(chaos, "trainer_worker_leg", lambda *a: json.loads(json.dumps(leg)))
    assert chaos.main(["--out", str(tmp_path), "--noise-seeds", "1"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {"kills", "resumes", "completed", "orphans", "lost", "accuracy", "noise", "within_noise",
            "failures", "uninterrupted_failures", "trainer_worker"} <= set(summary)
    assert [k["kind"] for k in summary["kills"]] == [*chaos.KINDS, "trainer_worker"] and summary["resumes"] == 3
    assert summary["accuracy"]["uninterrupted"] == acc and summary["noise"]["seed_range"]["rl1"] == 0.02
    assert summary["trainer_worker"]["within_noise"] == {"sft": True, "rl1": True} and summary["within_noise"]
    leg["kills"][0]["exit_code"] = 0  # a run that goes on with a dead worker fails make chaos
    assert chaos.main(["--out", str(tmp_path), "--noise-seeds", "1"]) == 1
