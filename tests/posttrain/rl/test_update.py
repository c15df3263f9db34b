"""gspo_update's KL penalty to a reference model (algo.kl_coef)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain.core.config import ConfigError, load_config
from posttrain.losses import kl_penalty
from posttrain.rl import trainer as rl
from posttrain.rl.logprobs import collate, response_logprobs
from posttrain.rl.policy_losses import POLICY_LOSSES
from posttrain.rl.update import gspo_update
from rollouts.types import Rollout

PROMPTS, RESPONSES = [[1, 2, 3], [4, 5], [6, 7, 8, 9]], [[4, 5], [6, 7, 8], [9]]


def _kl(model, ref) -> float:
    batch = collate(PROMPTS, RESPONSES, 0)
    with torch.no_grad():
        return float(kl_penalty(response_logprobs(model.eval(), batch), response_logprobs(ref.eval(), batch),
                                batch.response_mask)[0])


def _update(tiny_model, kl_coef: float) -> tuple[float, float, dict[str, float]]:
    """A policy moved away from the reference (seeded noise), one SGD update with zero advantages:
    the policy term has no gradient, so only the KL term can move the weights."""
    ref = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    before = _kl(model, ref)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    ro = [Rollout("p", i, p, r, [], "x") for i, (p, r) in enumerate(zip(PROMPTS, RESPONSES))]
    res = gspo_update(model, opt, sched, POLICY_LOSSES.get("gspo").bind({}), ro, torch.zeros(3), 0, 1, 100.0,
                      ref_model=ref.eval(), kl_coef=kl_coef)
    assert res.applied == 1
    return before, _kl(model, ref), res.metrics


def test_kl_coef_pulls_the_policy_towards_the_reference(tiny_model):
    before, after, metrics = _update(tiny_model, kl_coef=1.0)
    assert before > 1e-3 and after < 0.5 * before
    assert metrics["rl/kl_ref"] == pytest.approx(before, rel=1e-4)  # measured before the step
    still_before, unchanged, metrics = _update(tiny_model, kl_coef=0.0)
    assert unchanged == pytest.approx(still_before) and "rl/kl_ref" not in metrics


def test_kl_coef_needs_the_single_trainer():
    with pytest.raises(ConfigError, match=r"algo\.kl_coef=0\.1 needs a reference model.*trainer\.strategy=single"):
        load_config(rl.Config, None, ["algo.kl_coef=0.1", "trainer.strategy=fsdp", "trainer.num_workers=2"])
    with pytest.raises(ConfigError, match=r"algo\.kl_coef"):
        load_config(rl.Config, None, ["algo.kl_coef=-1"])
