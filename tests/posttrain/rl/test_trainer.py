"""The GSPO loop on the in-process HF generator: run-dir contract, guards, and
kill-and-resume determinism (RELIABILITY.md #2, #3, #8, #9)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from posttrain.core.config import load_config
from posttrain.core.data import DatasetError
from posttrain.core.stop import EXIT_PREEMPTED
from posttrain.rl import trainer as rl

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "digit_reward.py"


def _overrides(tiny_model, tiny_task, steps=3, **extra):
    ov = [f"model.path={tiny_model}", f"data.train={tiny_task[0]}", f"data.eval={tiny_task[1]}",
          "data.max_eval_rows=8", "rollout.backend=hf", "rollout.prompts_per_step=4", "rollout.group_size=4",
          "rollout.max_new_tokens=6", f"train.steps={steps}", "eval.every=2", "optim.lr=1e-3",
          "algo.eps_low=0.2", "algo.eps_high=0.2", "algo.num_minibatches=2",
          f"reward.components=[{{name: '{PLUGIN}:digit_fraction'}}]", "reward.workers=1"]
    return ov + [f"{k}={v}" for k, v in extra.items()]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_run_dir_contract_and_learning_signal(tiny_model, tiny_task, tmp_path):
    cfg = load_config(rl.Config, None, _overrides(tiny_model, tiny_task, steps=3))
    summary = rl.run(cfg, tmp_path / "run")
    lines = _metrics(tmp_path / "run")
    assert all(l["phase"] == "rl" and isinstance(l["step"], int) for l in lines)
    evals = [l for l in lines if "eval/accuracy" in l]
    assert [l["step"] for l in evals] == [0, 2, 3]
    train = [l for l in lines if "reward/mean" in l]
    assert [l["step"] for l in train] == [1, 2, 3]
    assert any(l["rl/steps_applied"] > 0 for l in train)  # dense reward: groups are not uniform
    assert all("reward/digit_fraction/mean" in l and "time/sync" in l for l in train)
    assert summary["steps"] == 3 and summary["accuracy_after_rl"] is not None
    assert (tmp_path / "run" / "config.yaml").is_file()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["final_model"] == summary["final_model"]
    from transformers import AutoModelForCausalLM
    AutoModelForCausalLM.from_pretrained(summary["final_model"])
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == "step-000003"


def _run_cli(args: list[str], **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "posttrain.cli", "rl", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def test_sigkill_and_resume_gives_the_same_losses(tiny_model, tiny_task, tmp_path):
    """Uninterrupted 6 steps vs SIGKILL after step 3's checkpoint + --resume: same
    prompt order and same losses for steps 4-6 (within 1e-6)."""
    ov = _overrides(tiny_model, tiny_task, steps=6, **{"train.checkpoint_every": 1, "eval.every": 0})
    ref = _run_cli([*ov, "--run-dir", str(tmp_path / "ref")])
    assert ref.wait(timeout=600) == 0, ref.stdout.read().decode()[-3000:]

    victim = _run_cli([*ov, "--run-dir", str(tmp_path / "kill")])
    latest = tmp_path / "kill" / "checkpoints" / "latest"
    deadline = time.time() + 600
    while time.time() < deadline:
        if latest.exists() and latest.read_text().strip() >= "step-000003":
            break
        if victim.poll() is not None:
            pytest.fail("run ended before it could be killed: " + victim.stdout.read().decode()[-2000:])
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = int(latest.read_text().strip().split("-")[1])
    assert killed_at < 6
    resumed = _run_cli(["--resume", str(tmp_path / "kill")])
    assert resumed.wait(timeout=600) == 0, resumed.stdout.read().decode()[-3000:]

    def by_step(run):
        out = {}
        for l in _metrics(tmp_path / run):
            if "rl/loss" in l or "reward/mean" in l:
                out[l["step"]] = l  # the resumed run's lines for a step win
        return out

    a, b = by_step("ref"), by_step("kill")
    for step in range(killed_at + 1, 7):
        assert abs(a[step]["reward/mean"] - b[step]["reward/mean"]) < 1e-9, step
        if "rl/loss" in a[step]:
            assert abs(a[step]["rl/loss"] - b[step]["rl/loss"]) < 1e-6, (step, a[step]["rl/loss"], b[step]["rl/loss"])
    assert json.loads((tmp_path / "kill" / "summary.json").read_text())["steps"] == 6


def test_resume_refuses_a_changed_dataset(tiny_model, tiny_task, tmp_path):
    cfg = load_config(rl.Config, None, _overrides(tiny_model, tiny_task, steps=1, **{"eval.every": 0}))
    rl.run(cfg, tmp_path / "run")
    changed = tmp_path / "train2.jsonl"
    changed.write_text(Path(tiny_task[0]).read_text().replace('"What is', '"Compute', 1))
    cfg2 = load_config(rl.Config, tmp_path / "run" / "config.yaml", [f"data.train={changed}", "train.steps=2"])
    with pytest.raises(DatasetError, match="dataset changed"):
        rl.run(cfg2, tmp_path / "run", resume=True)


def test_sigterm_checkpoints_and_exits_cleanly(tiny_model, tiny_task, tmp_path):
    ov = _overrides(tiny_model, tiny_task, steps=200, **{"eval.every": 0})
    p = _run_cli([*ov, "--run-dir", str(tmp_path / "run")])
    metrics = tmp_path / "run" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.exists() and '"reward/mean"' in metrics.read_text()):
        time.sleep(0.1)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=300) == EXIT_PREEMPTED  # a scheduler must not count a preempted job as a success
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["preempted"] is True and 0 < summary["steps"] < 200
    assert not (tmp_path / "run" / "final").exists() and summary["final_model"] is None
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text().strip() == f"step-{summary['steps']:06d}"


def test_nan_guard_leaves_parameters_unchanged(tiny_model):
    from transformers import AutoModelForCausalLM

    from posttrain.rl.policy_losses import POLICY_LOSSES
    from posttrain.rl.update import gspo_update
    from rollouts.types import Rollout

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ro = [Rollout("p", i, [1, 2, 3], [4, 5], [-1.0, -1.0], "x") for i in range(2)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    nan_adv = torch.tensor([float("nan"), 1.0])
    res = gspo_update(model, opt, sched, POLICY_LOSSES.get("gspo").bind({}), ro, nan_adv, 0, 1, 1.0)
    assert res.applied == 0 and res.skipped == 1 and sorted(res.bad_sample_ids) == ["p#0", "p#1"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    ok = gspo_update(model, opt, sched, POLICY_LOSSES.get("gspo").bind({}), ro, torch.tensor([1.0, -1.0]), 0, 1, 1.0)
    assert ok.applied == 1


def test_engine_old_logprobs_give_the_same_update_as_recomputing(tiny_model):
    """`algo.old_logprobs: engine` uses the sampler's log-probs instead of a forward pass;
    when they equal the trainer's, the update must be identical; when they differ, so must it."""
    from transformers import AutoModelForCausalLM

    from posttrain.rl.logprobs import collate, response_logprobs
    from posttrain.rl.policy_losses import POLICY_LOSSES
    from posttrain.rl.update import gspo_update
    from rollouts.types import Rollout

    prompts, responses = [[1, 2, 3], [4, 5], [6, 7, 8, 9]], [[4, 5], [6, 7, 8], [9]]
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    with torch.no_grad():
        lp = response_logprobs(model.eval(), collate(prompts, responses, 0))
    adv = torch.tensor([1.0, -0.5, -0.5])

    def update(logprobs: list[list[float]], mode: str) -> dict[str, torch.Tensor]:
        m = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        opt = torch.optim.SGD(m.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        ro = [Rollout("p", i, p, r, lps, "x") for i, (p, r, lps) in enumerate(zip(prompts, responses, logprobs))]
        loss_fn = POLICY_LOSSES.get("gspo").bind({"eps_low": 0.2, "eps_high": 0.2})
        res = gspo_update(m, opt, sched, loss_fn, ro, adv, 0, 1, 1.0, old_logprobs=mode)
        assert res.applied == 1
        return {k: v.detach().clone() for k, v in m.state_dict().items()}

    exact = [lp[i, :len(r)].tolist() for i, r in enumerate(responses)]
    recomputed, from_engine = update(exact, "trainer"), update(exact, "engine")
    assert all(torch.allclose(recomputed[k], from_engine[k], atol=1e-6) for k in recomputed)
    shifted = update([[x - 0.5 for x in row] for row in exact], "engine")  # ratios now off 1: clipped
    assert any(not torch.allclose(recomputed[k], shifted[k], atol=1e-6) for k in recomputed)


def test_hints_raise_levels_on_hard_prompts_and_eval_them_without_hints(tiny_model, tiny_task, tmp_path):
    """The untrained tiny model fails every prompt: after one all-wrong group each prompt is
    hard, its next visit carries a level-1 hint, the one after level 2 (progressive, raise
    after 1); each eval scores the hard prompts without hints; the state is saved."""
    from posttrain.core.data import load_rows, write_jsonl

    train = tmp_path / "four.jsonl"
    write_jsonl(train, load_rows(tiny_task[0])[:4])
    ov = _overrides(tiny_model, (train, tiny_task[1]), steps=4, **{
        "reward.components": "[{name: exact}]", "hints.enabled": "true", "hints.k": 1,
        "hints.raise_after": 1, "eval.every": 2})
    summary = rl.run(load_config(rl.Config, None, ov), tmp_path / "run")
    recs = _metrics(tmp_path / "run")
    steps = {r["step"]: r for r in recs if "hints/level_0" in r}
    assert [steps[s]["hints/level_0"] for s in (1, 2, 3, 4)] == [4.0, 0.0, 0.0, 0.0]
    assert steps[2]["hints/level_1"] == 4.0 and steps[3]["hints/level_2"] == 4.0
    hard_evals = [r for r in recs if "hints/hard_pass_rate_no_hint" in r]
    assert hard_evals and all(r["hints/hard_prompts"] == 4.0 for r in hard_evals)
    assert all(r["hints/hard_pass_rate_no_hint"] == 0.0 for r in hard_evals)
    assert summary["hints_hard_ids"] == 4
    state = json.loads((tmp_path / "run" / "hints_state.json").read_text())  # the next round's hints.init_state
    assert set(state["prompts"]) == {r["id"] for r in load_rows(train)}
    assert all(p["level"] >= 3 and len(p["history"]) == 4 for p in state["prompts"].values()), state


@pytest.mark.parametrize("train_prompt", ["hinted", "plain"])
def test_hinted_rollouts_are_trained_on_the_prompt_that_train_prompt_names(tiny_model, tiny_task, tmp_path,
                                                                           monkeypatch, train_prompt):
    """Generation always sees the hint; the update sees it (hinted, Keye) or the bare question (plain)."""
    from posttrain.core.data import load_rows, write_jsonl
    from posttrain.rl import trainer as rl_trainer
    from rollouts.evaluate import encode_rows

    rows = load_rows(tiny_task[0])[:4]
    train = tmp_path / "four.jsonl"
    write_jsonl(train, rows)
    seen: list[list] = []
    from posttrain.rl import policy

    real = policy.gspo_update

    def spy(*args, **kw):
        seen.append([(r.prompt_id, list(r.prompt_token_ids), r.meta["hint_level"]) for r in kw["rollouts"]])
        return real(*args, **kw)

    monkeypatch.setattr(policy, "gspo_update", spy)
    ov = _overrides(tiny_model, (train, tiny_task[1]), steps=2, **{
        "reward.components": "[{name: exact}]", "hints.enabled": "true", "hints.train_prompt": train_prompt,
        "algo.skip_uniform_groups": "false", "eval.every": 0, "data.max_eval_rows": 2})
    trainer = rl_trainer.GSPOTrainer(load_config(rl.Config, None, ov), tmp_path / "run")
    try:
        trainer.fit()
        bare = {p.prompt_id: p.token_ids for p in encode_rows(trainer.tok, rows)}
        hint_text = {r["id"]: r["hints"][0] for r in rows}
        assert [lvl for _, _, lvl in seen[0]] == [0] * 16 and [lvl for _, _, lvl in seen[1]] == [1] * 16
        assert all(ids == bare[pid] for pid, ids, _ in seen[0])
        for pid, ids, _ in seen[1]:
            has_hint = hint_text[pid] in trainer.tok.decode(ids)
            assert has_hint == (train_prompt == "hinted")
            assert (ids == bare[pid]) == (train_prompt == "plain")
    finally:
        trainer.close()


def test_plain_hint_training_refuses_engine_logprobs():
    with pytest.raises(ValueError, match="algo.old_logprobs=trainer"):
        rl.Config.model_validate({"hints": {"enabled": True, "train_prompt": "plain"},
                                  "algo": {"old_logprobs": "engine"}})
    rl.Config.model_validate({"hints": {"enabled": True, "train_prompt": "plain"}})


def test_teacher_hints_from_the_config(tiny_model, tiny_task, tmp_path):
    """hints.source=teacher builds the teacher source from hints.teacher (a tiny local model):
    prompts that turn hard get teacher-written hints, cached in RUN_DIR/hint_cache.jsonl."""
    from posttrain.core.config import ConfigError

    rows = Path(tiny_task[0]).read_text().splitlines()[:2]
    train = tmp_path / "train.jsonl"
    train.write_text("\n".join(rows) + "\n")  # 2 prompts, seen every step
    with pytest.raises(ConfigError, match="hints.source=teacher needs hints.teacher"):
        load_config(rl.Config, None, ["hints.enabled=true", "hints.source=teacher"])
    ov = _overrides(tiny_model, (train, tiny_task[1]), steps=3, **{
        "eval.every": 0, "rollout.prompts_per_step": 2, "hints.enabled": "true", "hints.source": "teacher",
        f"hints.teacher": str(tiny_model), "hints.eval_hard_rows": 0, "reward.threshold": 2.0})
    trainer = rl.GSPOTrainer(load_config(rl.Config, None, ov), tmp_path / "run")
    try:
        summary = trainer.fit()
    finally:
        trainer.close()
    teacher = trainer.teacher
    assert summary["hints_hard_ids"] == 2  # threshold 2: every prompt is hard after one step
    assert teacher.teacher == str(tiny_model) and teacher.generate_calls >= 1  # the teacher was asked
    cache = [json.loads(x) for x in (tmp_path / "run" / "hint_cache.jsonl").read_text().splitlines()]
    # an untrained teacher may answer with nothing: such a hint is recorded as a failure, not cached
    assert len(cache) + len(teacher.failures) >= 2 and all(c["teacher"] == str(tiny_model) for c in cache)


@pytest.mark.slow  # 100 steps (~1-2 min on 2 cores)
def test_memory_does_not_grow_step_over_step(tiny_model, tiny_task, tmp_path):
    """RELIABILITY.md #10: the trainer's RSS (`mem/rss_mb`, every step) over 100 steps has no
    trend: the last 40 steps' mean is within 64 MiB of the 40 before them (allocator noise on
    the tiny model is a few MiB; a leak of one batch's tensors per step would add far more)."""
    cfg = load_config(rl.Config, None, _overrides(tiny_model, tiny_task, steps=100, **{"eval.every": 0}))
    rl.run(cfg, tmp_path / "run")
    rss = [l["mem/rss_mb"] for l in _metrics(tmp_path / "run") if "mem/rss_mb" in l]
    assert len(rss) == 100 and all(r > 0 for r in rss)
    early, late = sum(rss[20:60]) / 40, sum(rss[60:]) / 40
    assert late - early < 64, (early, late)
