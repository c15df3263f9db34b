"""The bf16 working copy (posttrain.rl.mixed): forward and backward on bf16 parameters, fp32 master
weights and optimizer state, one cast per optimizer step. bf16 math runs on every CPU (emulated
without a bf16 unit), so these run everywhere; the speed is measured in docs/precision.md."""

from __future__ import annotations

import torch

from posttrain.core.config import load_config
from posttrain.rl.config import Config
from posttrain.rl.mixed import WorkingCopy
from posttrain.rl.policy import LocalPolicy
from posttrain.rl.policy_losses import POLICY_LOSSES
from posttrain.rl.update import gspo_update
from rollouts.types import Rollout

ADV = torch.tensor([1.0, -1.0, 0.5, -0.5])


def _rollouts() -> list[Rollout]:
    g = torch.Generator().manual_seed(0)
    return [Rollout("p", i, [1, 2, 3, 4], torch.randint(5, 60, (6,), generator=g).tolist(), [], "x")
            for i in range(4)]


def _load(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def _sgd_update(model, working=None):
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loss_fn = POLICY_LOSSES.get("gspo").bind({"eps_low": 0.2, "eps_high": 0.2})
    return gspo_update(model, opt, sched, loss_fn, _rollouts(), ADV, 0, 2, 1.0, working=working)


def test_working_copy_is_bf16_with_fp32_buffers_and_shares_tied_weights(tiny_model):
    model = _load(tiny_model)
    work = WorkingCopy(model)
    assert all(p.dtype == torch.bfloat16 for p in work.module.parameters())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # rotary frequencies rounded to bf16 would shift every position's angle
    assert all(b.dtype == torch.float32 for b in work.module.buffers() if b.is_floating_point())
    assert len(work.pairs) == len(list(model.parameters()))
    if model.config.tie_word_embeddings:
        m = work.module
        assert m.get_output_embeddings().weight is m.get_input_embeddings().weight


def test_working_copy_update_follows_the_fp32_update(tiny_model):
    m32 = _load(tiny_model)
    before = {k: v.clone() for k, v in m32.state_dict().items()}
    r32 = _sgd_update(m32)
    m16 = _load(tiny_model)
    work = WorkingCopy(m16)
    r16 = _sgd_update(m16, work)
    assert r16.applied == r32.applied == 2
    assert abs(r16.metrics["rl/loss"] - r32.metrics["rl/loss"]) < 0.05
    d16 = torch.cat([(v - before[k]).flatten() for k, v in m16.state_dict().items()])
    d32 = torch.cat([(v - before[k]).flatten() for k, v in m32.state_dict().items()])
    assert torch.nn.functional.cosine_similarity(d16, d32, dim=0) > 0.9
    # the master moved in fp32 (SGD steps of lr 1e-2 x small gradients sit below bf16's resolution of
    # many weights), and the bf16 copy was refreshed from it after the last step
    assert all(p.dtype == torch.float32 for p in m16.parameters())
    for master, w in work.pairs:
        assert w.grad is None
        assert torch.equal(w.detach(), master.detach().to(torch.bfloat16))


def test_bf16_local_policy_runs_its_passes_on_bf16_weights(tiny_model, tiny_task):
    """Fails if the bf16 policy falls back to autocast on the fp32 model (which casts every weight at
    every forward): the linear layers must see bf16 weights, the optimizer fp32 ones."""
    cfg = load_config(Config, None, [f"model.path={tiny_model}", f"data.train={tiny_task[0]}",
                                     f"data.eval={tiny_task[1]}", "algo.num_minibatches=2"])
    policy = LocalPolicy(cfg, str(tiny_model), "bfloat16", 0)
    seen: list[torch.dtype] = []
    hooks = [m.register_forward_hook(lambda mod, i, o: seen.append(mod.weight.dtype))
             for m in policy.working.module.modules() if isinstance(m, torch.nn.Linear)]
    hooks += [m.register_forward_hook(lambda mod, i, o: seen.append(torch.float64))  # the fp32 master must not run
              for m in policy.model.modules() if isinstance(m, torch.nn.Linear)]
    res = policy.update(_rollouts(), ADV, torch.Generator().manual_seed(0))
    for h in hooks:
        h.remove()
    assert res.applied == 2
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in policy.model.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in policy.optimizer.state.values())
    assert all(t.dtype == torch.float32 for t in policy.state_dict().values() if t.is_floating_point())
