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
