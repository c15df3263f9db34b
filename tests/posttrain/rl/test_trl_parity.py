"""Parity with TRL's GSPO update (issue 16, item 1).

The same rollouts (prompts of different lengths, responses of different lengths) and the
same advantages go through posttrain's update (`gspo_update` with `gspo_loss`) and through
TRL's `GRPOTrainer._compute_loss` configured as GSPO (importance_sampling_level="sequence",
loss_type="grpo", beta=0, same clip range), each with its own optimizer and schedule as
built by its own code. Two minibatches, so the second one sees a ratio != 1 and clipping.
The updated parameters must agree within 1e-5.
"""

from __future__ import annotations

import copy

import pytest
import torch

from posttrain.core.config import OptimConfig
from posttrain.core.models import load_policy
from posttrain.rl.optim import make_optimizer
from posttrain.rl.policy_losses import POLICY_LOSSES
from posttrain.rl.update import gspo_update
from rollouts.types import Rollout

EPS_LOW, EPS_HIGH, LR, MINIBATCHES = 3e-4, 4e-4, 1e-3, 2


def _rollouts(vocab: int, eos: int) -> tuple[list[Rollout], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    out = []
    for p in range(2):  # 2 prompts x 4 samples
        prompt = torch.randint(5, vocab, (3 + 2 * p,), generator=g).tolist()
        for s in range(4):
            n = 2 + (3 * s + p) % 5
            resp = torch.randint(5, vocab, (n,), generator=g).tolist() + ([eos] if s % 2 else [])
            out.append(Rollout(f"p{p}", s, prompt, resp, [0.0] * len(resp), "", "stop"))
    adv = torch.tensor([1.2, -0.4, -0.8, 0.0, 0.9, 0.3, -1.5, 0.3])
    return out, adv


def _trl_update(model, tok, rollouts, adv, order, tmp_path):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    cfg = GRPOConfig(output_dir=str(tmp_path / "trl"), use_cpu=True, importance_sampling_level="sequence",
                     loss_type="grpo", beta=0.0, epsilon=EPS_LOW, epsilon_high=EPS_HIGH, num_generations=4,
                     per_device_train_batch_size=4, steps_per_generation=MINIBATCHES, gradient_accumulation_steps=1,
                     learning_rate=LR, lr_scheduler_type="constant", max_grad_norm=1.0, max_steps=MINIBATCHES,
                     report_to="none", save_strategy="no", gradient_checkpointing=False, bf16=False)
    data = Dataset.from_list([{"prompt": "1+1="}] * 8)
    trainer = GRPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                          args=cfg, train_dataset=data, processing_class=tok)
    trainer.create_optimizer_and_scheduler(num_training_steps=MINIBATCHES)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train(); we drive the steps here
    model = trainer.model
    model.train()
    P = max(len(r.prompt_token_ids) for r in rollouts)
    R = max(len(r.token_ids) for r in rollouts)
    pad = tok.pad_token_id
    prompt_ids = torch.tensor([[pad] * (P - len(r.prompt_token_ids)) + r.prompt_token_ids for r in rollouts])
    prompt_mask = torch.tensor([[0] * (P - len(r.prompt_token_ids)) + [1] * len(r.prompt_token_ids) for r in rollouts])
    comp_ids = torch.tensor([r.token_ids + [pad] * (R - len(r.token_ids)) for r in rollouts])
    comp_mask = torch.tensor([[1] * len(r.token_ids) + [0] * (R - len(r.token_ids)) for r in rollouts])
    with torch.no_grad():  # TRL's old log-probs: one forward before the first optimizer step
        old, _, _ = trainer._get_per_token_logps_and_entropies(
            model, torch.cat([prompt_ids, comp_ids], 1), torch.cat([prompt_mask, comp_mask], 1), R)
    for mb in torch.tensor_split(order, MINIBATCHES):
        inputs = {"prompt_ids": prompt_ids[mb], "prompt_mask": prompt_mask[mb], "completion_ids": comp_ids[mb],
                  "completion_mask": comp_mask[mb], "advantages": adv[mb], "old_per_token_logps": old[mb]}
        loss = trainer._compute_loss(model, inputs)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        trainer.optimizer.step()
        trainer.lr_scheduler.step()
        trainer.optimizer.zero_grad()
    return model


def test_one_update_matches_trl_gspo(tiny_model, tmp_path):
    pytest.importorskip("trl")
    model, tok = load_policy(str(tiny_model), "float32", "cpu")
    rollouts, adv = _rollouts(model.config.vocab_size, tok.eos_token_id)
    twin = copy.deepcopy(model)

    opt, sched = make_optimizer(model, OptimConfig(lr=LR), MINIBATCHES)
    loss_fn = POLICY_LOSSES.get("gspo").bind({"eps_low": EPS_LOW, "eps_high": EPS_HIGH})
    gen = torch.Generator().manual_seed(3)
    order = torch.randperm(len(rollouts), generator=torch.Generator().manual_seed(3))
    res = gspo_update(model, opt, sched, loss_fn, rollouts, adv, tok.pad_token_id, MINIBATCHES, 1.0,
                      "trainer", gen)
    assert res.applied == MINIBATCHES and res.metrics["rl/clip_frac"] > 0  # the 2nd minibatch clips

    trl_model = _trl_update(twin, tok, rollouts, adv, order, tmp_path)
    moved, worst = 0.0, 0.0
    ref = dict(load_policy(str(tiny_model), "float32", "cpu")[0].named_parameters())
    for (name, a), (_, b) in zip(model.named_parameters(), trl_model.named_parameters()):
        worst = max(worst, float((a - b).abs().max()))
        moved = max(moved, float((a - ref[name]).abs().max()))
    assert moved > 1e-4  # the update did something
    assert worst < 1e-5, f"posttrain and TRL disagree by {worst:.2e} after one GSPO update"
