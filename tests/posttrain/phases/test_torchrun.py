"""TRL phases on several processes: `torchrun --nproc_per_node 2 -m posttrain.cli sft|mpo|rm` on CPU
(gloo). Both ranks train (DDP through accelerate), rank 0 alone writes the run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.posttrain.phase_fixtures import SMALL_MODEL, TINY, easy_pairs, task_files

STEPS, BATCH = 4, 8


def _torchrun(phase: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "posttrain.cli", phase,
           "--config", str(TINY / f"{phase}.yaml"), *SMALL_MODEL, f"train.max_steps={STEPS}",
           f"train.batch_size={BATCH}", "train.logging_steps=1", "--run-dir", str(cwd / "run"), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.parametrize("phase", ["sft", pytest.param("mpo", marks=pytest.mark.slow),
                                   pytest.param("rm", marks=pytest.mark.slow)])
def test_phase_under_torchrun_on_two_cpu_processes(phase, tmp_path):
    from transformers import AutoConfig

    train, held = task_files(tmp_path)
    pairs, pairs_held = easy_pairs(tmp_path)
    data = {"sft": [f"data.train={train}", f"data.eval={held}", "eval.max_rows=8", "eval.every=2"],
            "mpo": [f"data.train={pairs}", f"data.eval={pairs_held}", f"data.eval_rows={held}", "eval.max_rows=8"],
            "rm": [f"data.train={pairs}", f"data.eval={pairs_held}", "length_debias.enabled=false"]}[phase]
    res = _torchrun(phase, data, tmp_path)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert res.stdout.count('"phase"') == 1  # one summary: rank 0's
    run = tmp_path / "run"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == STEPS
    lines = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [l["step"] for l in lines if f"{phase}/loss" in l]
    assert steps == list(range(1, STEPS + 1))  # each step logged once, not once per rank
    epoch = [l[f"{phase}/epoch"] for l in lines if f"{phase}/loss" in l][-1]
    assert epoch == pytest.approx(STEPS * BATCH * 2 / summary.get("train_rows", summary.get("pairs")), rel=0.02)
    AutoConfig.from_pretrained(run / "final")  # one HF folder
