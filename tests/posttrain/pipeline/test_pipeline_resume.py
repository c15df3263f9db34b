"""The Keye recipe end to end on a tiny model (in-process HF rollouts): the summary
contract, and a SIGKILL in the middle of the last RL stage followed by `--resume`,
which reruns no finished stage and continues the killed one from its checkpoint."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "digit_reward.py"
DENSE = f"[{{name: '{PLUGIN}:digit_fraction'}}]"  # a random tiny model gets signal from it


def tiny_recipe(train: Path, held: Path, rl2_steps: int = 3) -> list[str]:
    """The shipped recipe shrunk to seconds per stage; any task file works the same way."""
    return [
        f"data.train={train}", f"data.eval={held}", "model.init=tiny", "model.tiny_hidden=64",
        "model.tiny_layers=1", "model.tiny_heads=1", "model.tiny_head_dim=64",
        "stages.sft.values.train={max_steps: 4, batch_size: 16, logging_steps: 2, save_steps: 2}",
        "stages.sft.values.eval={every: 0, max_rows: 8, max_new_tokens: 6}",
        "defaults.rl.rollout={backend: hf, prompts_per_step: 4, group_size: 4, max_new_tokens: 6}",
        "defaults.rl.train={steps: 2, checkpoint_every: 1}", "defaults.rl.eval.every=0",
        "defaults.rl.data.max_eval_rows=8", "defaults.rl.algo={num_minibatches: 1, eps_low: 0.2, eps_high: 0.2}",
        f"defaults.rl.reward={{components: {DENSE}, workers: 1}}", "defaults.rl.optim.lr=1e-3",
        f"stages.rl2.values.train.steps={rl2_steps}",
        f"stages.rft.values.filter={{reward: {{components: {DENSE}, threshold: 0.05}}, max_per_prompt: 2}}",
        "stages.rft.values.data.max_prompts=16", "stages.rft.values.sampling={k: 4, max_tokens: 6}",
        "stages.rft.values.sft.train={max_steps: 2, batch_size: 8, logging_steps: 1, save_steps: 1}",
        "stages.rft.values.eval={max_rows: 8, max_new_tokens: 6}",
        f"stages.filter.values.reward={{components: {DENSE}, threshold: 0.05}}",
        "stages.filter.values.data.max_prompts=16", "stages.filter.values.sampling={k: 4, max_tokens: 6}",
    ]


def _cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "posttrain.cli", "pipeline", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _state(run: Path) -> dict:
    return json.loads((run / "pipeline_state.json").read_text())["stages"]


def test_sigkill_mid_stage_then_resume_to_the_end(tiny_task, tmp_path):
    run = tmp_path / "run"
    victim = _cli([*tiny_recipe(*tiny_task, rl2_steps=40), "--run-dir", str(run)])
    latest = run / "rl2" / "checkpoints" / "latest"
    deadline = time.time() + 900
    while time.time() < deadline:
        if latest.exists() and latest.read_text().strip() >= "step-000002":
            break
        if victim.poll() is not None:
            pytest.fail("pipeline ended before it could be killed: " + victim.stdout.read().decode()[-3000:])
        time.sleep(0.1)
    else:
        victim.kill()
        pytest.fail("rl2 never checkpointed step 2")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = int(latest.read_text().strip().split("-")[1])
    before = _state(run)
    assert [n for n, r in before.items() if r["status"] == "done"] == ["sft", "rl1", "rft", "filter"]
    assert before["rl2"]["status"] == "running" and killed_at < 40
    finals = {n: (run / n / "summary.json").stat().st_mtime_ns for n in ("sft", "rl1", "rft", "filter")}

    # a changed config of a finished stage is refused ...
    refused = _cli(["--resume", str(run), "stages.rft.values.sampling.k=2"])
    out = refused.stdout.read().decode()
    assert refused.wait(timeout=300) == 2 and "--force" in out and "rft" in out

    # ... the unchanged pipeline resumes rl2 (only) from its checkpoint, with fewer steps to go
    resumed = _cli(["--resume", str(run), "stages.rl2.values.train.steps=" + str(killed_at + 2)])
    out = resumed.stdout.read().decode()
    # changing rl2's steps changes its hash: refused without --force
    assert resumed.wait(timeout=300) == 2 and "rl2" in out
    resumed = _cli(["--resume", str(run)])
    out = resumed.stdout.read().decode()
    assert resumed.wait(timeout=900) == 0, out[-3000:]
    after = _state(run)
    assert all(r["status"] == "done" for r in after.values())
    assert {n: r["attempts"] for n, r in after.items()} == {"sft": 1, "rl1": 1, "rft": 1, "filter": 1, "rl2": 2}
    assert after["rl2"]["wall_s"] > 0  # accumulated over both attempts (the killed one up to its last write)
    assert finals == {n: (run / n / "summary.json").stat().st_mtime_ns for n in finals}
    rl2 = json.loads((run / "rl2" / "summary.json").read_text())
    assert rl2["steps"] == 40 and not rl2["interrupted"]
    steps = [json.loads(l)["step"] for l in (run / "rl2" / "metrics.jsonl").read_text().splitlines()
             if '"reward/mean"' in l]
    assert steps[-1] == 40 and killed_at + 1 in steps  # continued after the checkpoint

    summary = json.loads((run / "summary.json").read_text())
    assert [(s["name"], s["kind"]) for s in summary["stages"]] == [
        ("sft", "sft"), ("rl1", "rl"), ("rft", "rft"), ("filter", "filter"), ("rl2", "rl")]
    for s in summary["stages"]:
        assert 0.0 <= s["accuracy"] <= 1.0 and Path(s["model"], "config.json").is_file(), s
    for key in ("sft_model", "final_model", "eval_data", "wall_s", "accuracy_before_rl", "accuracy_after_rl",
                "rl_wall_s"):
        assert summary[key] is not None, key
    assert summary["final_model"] == str((run / "rl2" / "final").resolve())
    assert (run / "report.html").read_text().count("data:image/png;base64,") == 5
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    # the next round's prompts are the filtered ones, the hint state carried over from rl1
    cfg = (run / "rl2" / "config.yaml").read_text()
    assert "filter/rl_prompts.jsonl" in cfg and "rl1/hints_state.json" in cfg


def test_any_task_file_runs_the_whole_recipe_offline(tmp_path):
    """A user's own verifiable task (no hints, not addition) with data.train/data.eval and model.init=tiny."""
    import random

    from posttrain.core.data import write_jsonl
    from posttrain.pipeline.config import load_pipeline_config
    from posttrain.pipeline.runner import run_pipeline

    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 5))) for _ in range(120)]
    rows = [{"id": f"rev-{i}", "prompt": f"Reverse the word {w}.", "answer": w[::-1]} for i, w in enumerate(words)]
    write_jsonl(tmp_path / "train.jsonl", rows[:100])
    write_jsonl(tmp_path / "eval.jsonl", rows[100:])
    cfg = load_pipeline_config(None, tiny_recipe(tmp_path / "train.jsonl", tmp_path / "eval.jsonl", rl2_steps=2))
    summary = run_pipeline(cfg, tmp_path / "run")
    assert [s["kind"] for s in summary["stages"]] == ["sft", "rl", "rft", "filter", "rl"]
    assert all(s["accuracy"] is not None for s in summary["stages"])
    tok = json.loads((tmp_path / "run" / "init_model" / "tokenizer.json").read_text())["model"]["vocab"]
    assert "Reverse" in tok or "ĠReverse" in tok or "Re" in tok  # the tokenizer was trained on this file
    assert "hints:\n  enabled: false" in (tmp_path / "run" / "rl1" / "config.yaml").read_text()
