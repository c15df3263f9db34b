"""`make chaos` bookkeeping (scripts/chaos.py) without a run: what counts as lost after a
kill, which process a kill targets, and the summary's contract keys."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
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
