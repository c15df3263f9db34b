"""Kill and preemption on the real path (Ray + vLLM engines), RELIABILITY.md #2, #3, #10:
a SIGTERMed `posttrain rl` checkpoints, exits 3 and leaves no process of its run behind
(Ray's GCS and raylet, the engine actor, reward workers); a SIGKILLed one leaves none
either, and `--resume` gives the uninterrupted run's rewards and losses (engine
log-probs, seeded units, the weight version restored from the checkpoint)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import psutil
import pytest

from posttrain.core.stop import EXIT_PREEMPTED
from tests.posttrain.rl.test_trainer import _metrics, _overrides, _run_cli

pytestmark = pytest.mark.engine


def _vllm(tiny_model, tiny_task, steps: int, **extra) -> list[str]:
    return _overrides(tiny_model, tiny_task, steps=steps, **{
        "rollout.backend": "vllm", "engine.max_model_len": 256, "ray.num_cpus": 2, "eval.every": 0,
        "train.checkpoint_every": 1, **extra})


class Family:
    """Every process the run started (sampled while it runs: Ray's workers are the raylet's
    children, not the CLI's), so what is left after it ended can be named."""

    def __init__(self, root: psutil.Process):
        self.root, self.seen = root, {}

    def sample(self) -> None:
        try:
            for p in self.root.children(recursive=True):
                try:
                    self.seen.setdefault((p.pid, p.create_time()), " ".join(p.cmdline())[:160])
                except psutil.Error:
                    pass
        except psutil.Error:
            pass

    def alive(self, grace_s: float = 120.0) -> list[str]:
        """The processes still running after `grace_s`. After a SIGKILL of the driver, Ray's own
        dashboard and runtime-env agents notice their raylet is gone only after 60-90 s here
        (they retry the dead GCS to flush their logs): Ray's behaviour, bounded, not a leak."""
        deadline = time.time() + grace_s
        while True:
            left = []
            for (pid, created), cmd in self.seen.items():
                try:
                    p = psutil.Process(pid)
                    if p.create_time() == created and p.status() != psutil.STATUS_ZOMBIE:
                        left.append(f"{pid} {cmd}")
                except psutil.Error:
                    pass
            if not left or time.time() > deadline:
                return left
            time.sleep(0.5)


def _run_until(proc, family: Family, done, timeout_s: float = 900) -> None:
    deadline = time.time() + timeout_s
    while not done():
        family.sample()
        if proc.poll() is not None:
            pytest.fail("run ended before the signal: " + proc.stdout.read().decode()[-2000:])
        if time.time() > deadline:
            proc.kill()
            pytest.fail("the run did not reach the point of the signal in time")
        time.sleep(0.2)
    family.sample()


def test_sigterm_on_the_vllm_path_checkpoints_exits_3_and_leaves_no_process(tiny_model, tiny_task, tmp_path):
    run = tmp_path / "run"
    p = _run_cli([*_vllm(tiny_model, tiny_task, steps=200), "--run-dir", str(run)])
    family = Family(psutil.Process(p.pid))
    metrics = run / "metrics.jsonl"
    _run_until(p, family, lambda: metrics.exists() and '"reward/mean"' in metrics.read_text())
    assert any("raylet" in c for c in family.seen.values()), family.seen  # the run's own Ray was seen
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=300) == EXIT_PREEMPTED, p.stdout.read().decode()[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["preempted"] is True and not (run / "final").exists()
    assert family.alive() == []


@pytest.mark.slow
def test_sigkill_and_resume_on_the_vllm_path_gives_the_same_losses(tiny_model, tiny_task, tmp_path):
    ov = _vllm(tiny_model, tiny_task, steps=5)
    ref = _run_cli([*ov, "--run-dir", str(tmp_path / "ref")])
    assert ref.wait(timeout=900) == 0, ref.stdout.read().decode()[-3000:]

    victim = _run_cli([*ov, "--run-dir", str(tmp_path / "kill")])
    family = Family(psutil.Process(victim.pid))
    latest = tmp_path / "kill" / "checkpoints" / "latest"
    _run_until(victim, family, lambda: latest.exists() and latest.read_text().strip() >= "step-000002")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert family.alive() == []  # Ray, the engine and the reward workers die with the driver
    killed_at = int(latest.read_text().strip().split("-")[1])
    assert killed_at < 5
    resumed = _run_cli(["--resume", str(tmp_path / "kill")])
    assert resumed.wait(timeout=900) == 0, resumed.stdout.read().decode()[-3000:]

    def by_step(run: Path) -> dict[int, dict]:
        return {l["step"]: l for l in _metrics(run) if "reward/mean" in l}  # the resumed run's lines win

    a, b = by_step(tmp_path / "ref"), by_step(tmp_path / "kill")
    for step in range(killed_at + 1, 6):
        assert a[step]["weight_version"] == b[step]["weight_version"] == step
        assert abs(a[step]["reward/mean"] - b[step]["reward/mean"]) < 1e-9, step
        if "rl/loss" in a[step]:
            assert abs(a[step]["rl/loss"] - b[step]["rl/loss"]) < 1e-5, (step, a[step]["rl/loss"], b[step]["rl/loss"])
    assert json.loads((tmp_path / "kill" / "summary.json").read_text())["steps"] == 5
