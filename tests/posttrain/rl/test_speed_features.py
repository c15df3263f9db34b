"""Issue 16's features in the GSPO step, on the in-process HF generator: dynamic sampling,
overlong handling, off-policy correction, one-step-off-policy rollouts. Each test fails when
its feature is switched off or removed."""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path

import pytest
import torch

from posttrain.core.config import ConfigError, OptimConfig, load_config
from posttrain.core.models import load_policy
from posttrain.rl import trainer as rl
from posttrain.rl.optim import make_optimizer
from posttrain.rl.policy_losses import POLICY_LOSSES
from posttrain.rl.update import gspo_update
from rollouts.types import Rollout

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "digit_reward.py"


def _trainer(tiny_model, tiny_task, tmp_path, *extra: str) -> rl.GSPOTrainer:
    ov = [f"model.path={tiny_model}", f"data.train={tiny_task[0]}", "rollout.backend=hf",
          "rollout.prompts_per_step=3", "rollout.group_size=2", "rollout.max_new_tokens=4", "train.steps=3",
          "eval.every=0", "optim.lr=1e-3", "algo.num_minibatches=1", "reward.workers=1",
          f"reward.components=[{{name: '{PLUGIN}:digit_fraction'}}]", *extra]
    return rl.GSPOTrainer(load_config(rl.Config, None, ov), tmp_path / "run")


def _scripted(trainer: rl.GSPOTrainer, rounds: list[list[float]]) -> None:
    """Replace generate/score: round k's rewards are rounds[k] (one per rollout), responses end at EOS."""
    calls = iter(rounds)

    def generate(draws, step):
        G = trainer.cfg.rollout.group_size
        return [Rollout(d.id, j, [1, 2], [5, trainer.tok.eos_token_id], [-1.0, -1.0], "5", "stop", trainer.version, step)
                for d in draws for j in range(G)]

    def score(draws, rollouts):
        r = next(calls)
        return type("B", (), {"rewards": r, "metrics": {}})(), torch.tensor(r, dtype=torch.float64)

    trainer.generate, trainer.score = generate, score


def test_dynamic_sampling_resamples_until_enough_informative_groups(tiny_model, tiny_task, tmp_path):
    rounds = [[1, 1, 0, 0, 1, 0],   # 1 informative group of 3
              [0, 0, 1, 1, 1, 1],   # none
              [0, 1, 1, 0, 1, 0]]   # 3 more: 4 >= 3 wanted, stop; 1 surplus dropped
    t = _trainer(tiny_model, tiny_task, tmp_path, "dynamic_sampling.enabled=true", "dynamic_sampling.max_rounds=5")
    try:
        _scripted(t, rounds)
        m = t.train_step(0)
        assert m["rl/ds_rounds"] == 2 and m["rl/groups_sampled"] == 9
        assert m["rl/groups_kept"] == 3 and m["rl/groups_dropped"] == 6 and m["rl/trained_samples"] == 6
    finally:
        t.close()
    off = _trainer(tiny_model, tiny_task, tmp_path / "off")
    try:
        _scripted(off, rounds)
        m = off.train_step(0)
        assert m["rl/ds_rounds"] == 0 and m["rl/groups_kept"] == 1
    finally:
        off.close()


def test_dynamic_sampling_stops_after_max_rounds(tiny_model, tiny_task, tmp_path):
    t = _trainer(tiny_model, tiny_task, tmp_path, "dynamic_sampling.enabled=true", "dynamic_sampling.max_rounds=1")
    try:
        _scripted(t, [[1] * 6, [0] * 6, [0, 1] * 3])
        m = t.train_step(0)
        assert m["rl/ds_rounds"] == 1 and m["rl/groups_kept"] == 0 and m["rl/steps_applied"] == 0
    finally:
        t.close()


def _truncated_batch(t: rl.GSPOTrainer) -> tuple[list, list[Rollout], torch.Tensor]:
    draws = t.draw(0)[:2]
    ro = [Rollout(d.id, j, [1], [5] * n, [-1.0] * n, "", fin, 0, 0)
          for d, (n, fin) in zip([draws[0]] * 2 + [draws[1]] * 2, [(2, "stop"), (4, "length"), (1, "stop"), (3, "stop")])
          for j in [0]]
    return draws, ro, torch.tensor([0.0, 1.0, 1.0, 0.5], dtype=torch.float64)


@pytest.mark.parametrize("mode", ["none", "mask", "soft_penalty"])
def test_overlong_handling(tiny_model, tiny_task, tmp_path, mode):
    t = _trainer(tiny_model, tiny_task, tmp_path, f"overlong.mode={mode}", "overlong.buffer=2")
    try:
        draws, ro, rewards = _truncated_batch(t)
        chosen, adv, m = t.select(draws, ro, rewards)
        assert m["rl/truncated_frac"] == 0.25
        lengths = [len(r.token_ids) for r in chosen]
        if mode == "mask":  # the cut response leaves the loss; its group-mate keeps its advantage
            assert lengths == [2, 1, 3] and adv.tolist() == [-1.0, 1.0, -1.0]
        elif mode == "soft_penalty":  # 4 tokens, cut: 1 - 1 = 0 ties the 0.0 of its mate: group 0 is uniform
            assert lengths == [1, 3] and adv.tolist() == [1.0, -1.0]
        else:
            assert lengths == [2, 4, 1, 3] and adv.tolist() == [-1.0, 1.0, 1.0, -1.0]
    finally:
        t.close()


def _engine_rollouts(model, tok, far: int) -> tuple[list[Rollout], torch.Tensor]:
    """Rollouts whose engine log-probs equal the trainer's, except sample `far`, made 10x less likely."""
    from posttrain.rl.logprobs import collate, response_logprobs

    ro = [Rollout("p", j, [3, 4, 5], [6 + j, 7, 8 + j], [], "", "stop") for j in range(4)]
    with torch.no_grad():
        lp = response_logprobs(model, collate([r.prompt_token_ids for r in ro], [r.token_ids for r in ro], 0))
    for j, r in enumerate(ro):
        r.logprobs = (lp[j] - (2.3 if j == far else 0.0)).tolist()
    return ro, torch.tensor([1.0, -1.0, 0.5, -0.5])


def _update(model, ro, adv, correction):
    model = copy.deepcopy(model)
    opt, sched = make_optimizer(model, OptimConfig(lr=1e-3), 1)
    res = gspo_update(model, opt, sched, POLICY_LOSSES.get("gspo").bind({}), ro, adv, 0, 1, 1.0, "trainer",
                      torch.Generator().manual_seed(0), correction)
    return model, res


def test_mis_masks_the_mismatched_sample_and_tis_truncates_it(tiny_model):
    model, tok = load_policy(str(tiny_model), "float32", "cpu")
    ro, adv = _engine_rollouts(model, tok, far=0)
    mis, res = _update(model, ro, adv, ("mis", "sequence", 2.0))
    assert res.metrics["offpolicy/masked_frac"] == 0.25 and res.metrics["offpolicy/ratio_max"] > 9
    assert res.metrics["offpolicy/kl"] > 0
    # masking = training without that sample (its advantage weighted 0)
    without, _ = _update(model, ro, adv * torch.tensor([0.0, 1, 1, 1]), ("none", "sequence", 2.0))
    none, _ = _update(model, ro, adv, ("none", "sequence", 2.0))
    diff = lambda a, b: max(float((p - q).abs().max()) for p, q in zip(a.parameters(), b.parameters()))
    assert diff(mis, without) < 1e-7 and diff(mis, none) > 1e-5
    tis, res = _update(model, ro, adv, ("tis", "sequence", 2.0))
    assert res.metrics["offpolicy/truncated_frac"] == 0.25
    capped, _ = _update(model, ro, adv * torch.tensor([2.0, 1, 1, 1]), ("none", "sequence", 2.0))
    assert diff(tis, capped) < 1e-6


def test_correction_config_defaults_and_errors():
    assert load_config(rl.Config, None, []).correction_mode() == "none"
    assert load_config(rl.Config, None, ["rollout.max_staleness=1"]).correction_mode() == "tis"
    assert load_config(rl.Config, None, ["engine.dtype=bfloat16"]).correction_mode() == "tis"
    with pytest.raises(ConfigError, match="algo.old_logprobs=trainer"):
        load_config(rl.Config, None, ["off_policy.mode=tis", "algo.old_logprobs=engine"])
    with pytest.raises(ConfigError, match="off_policy.level=sequence"):
        load_config(rl.Config, None, ["off_policy.mode=mis", "off_policy.level=token"])
    with pytest.raises(ConfigError, match="'overlong.modes' is not a known field"):
        load_config(rl.Config, None, ["overlong.modes=mask"])


def _events(t: rl.GSPOTrainer) -> list[tuple[str, int, float, float]]:
    """Wrap generate and update to log (what, step, start, end)."""
    log: list = []
    gen, upd = t.generate, t.update

    def generate(draws, step):
        s = time.monotonic()
        out = gen(draws, step)
        log.append(("generate", step, s, time.monotonic(), threading.current_thread().name))
        return out

    def update(chosen, adv, step):
        s = time.monotonic()
        out = upd(chosen, adv, step)
        log.append(("update", step, s, time.monotonic(), threading.current_thread().name))
        return out

    t.generate, t.update = generate, update
    return log


@pytest.mark.parametrize("partial", ["finish", "restart"])
def test_one_step_off_policy_rollouts(tiny_model, tiny_task, tmp_path, partial):
    t = _trainer(tiny_model, tiny_task, tmp_path, "rollout.max_staleness=1", f"rollout.partial_rollouts={partial}",
                 "rollout.prompts_per_step=4", "rollout.group_size=4", "train.steps=4")
    try:
        log = _events(t)
        ms = [t.train_step(k) for k in range(4)]
    finally:
        t.close()
    gens: dict = {}
    for e in log:
        if e[0] == "generate":
            gens.setdefault(e[1], e)
    assert gens[1][4].startswith("rollout")  # step 1's batch came from the background thread
    if partial == "finish":
        assert [m["rollout/staleness_max"] for m in ms] == [0.0, 1.0, 1.0, 1.0]
        assert all(m["rollout/restarted"] == 0 for m in ms) and "time/rollout_wait" in ms[0]
        assert any(m.get("offpolicy/kl", -1) >= 0 for m in ms)  # engine vs trainer measured
    else:  # the in-flight batch is redone with the new weights: on-policy again
        assert [m["rollout/staleness_max"] for m in ms] == [0.0, 0.0, 0.0, 0.0]
        assert [m["rollout/restarted"] for m in ms] == [16, 16, 16, 0]  # the last step prefetches nothing
    assert all(m["rollout/dropped_stale"] == 0 for m in ms)
    assert t._pending is None  # nothing generated beyond train.steps


def test_stale_samples_beyond_the_bound_are_not_trained_on(tiny_model, tiny_task, tmp_path):
    t = _trainer(tiny_model, tiny_task, tmp_path)
    try:
        draws, ro, rewards = _truncated_batch(t)
        t.version = 1  # the trainer moved on; these rollouts carry version 0
        chosen, _, m = t.select(draws, ro, rewards)
        assert chosen == [] and m["rollout/dropped_stale"] == 4
    finally:
        t.close()


@pytest.mark.parametrize("module", ["posttrain.rl.offpolicy", "posttrain.rl.shaping"])
def test_doctests(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_logprobs_keep_only_the_response_logits(tiny_model):
    """The LM head runs on the response positions only (logits_to_keep); the log-probs are those of
    the full forward (a model without logits_to_keep takes the fallback path)."""
    from posttrain.rl.logprobs import collate, response_logprobs

    model, _ = load_policy(str(tiny_model), "float32", "cpu")

    class NoKeep(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.seen = inner, []

        def forward(self, input_ids, attention_mask, position_ids, use_cache):
            out = self.inner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             use_cache=use_cache)
            self.seen.append(out.logits.shape[1])
            return out

    batch = collate([[1, 2, 3, 4], [5, 6]], [[7, 8], [9, 10, 11]], 0)
    full = NoKeep(model)
    with torch.no_grad():
        ref, fast = response_logprobs(full, batch), response_logprobs(model, batch)
    assert full.seen == [7]  # the fallback computed every position's logits
    torch.testing.assert_close(fast, ref, atol=1e-6, rtol=0)
