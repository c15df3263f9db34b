"""Mixed-precision GSPO: bf16 autocast compute with fp32 master weights, and `dtype: auto`
recorded in the run summary. bf16 math runs on every CPU (emulated where there is no bf16
unit), so these run everywhere; only the speed claim needs a fast bf16 unit."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from posttrain.core.devices import fast_bf16, resolve_dtype
from posttrain.rl.logprobs import collate
from posttrain.rl.policy_losses import POLICY_LOSSES
from posttrain.rl.update import gspo_update
from rollouts.types import Rollout

PLUGIN = Path(__file__).resolve().parents[1] / "plugins" / "digit_reward.py"


def _rollouts() -> list[Rollout]:
    g = torch.Generator().manual_seed(0)
    return [Rollout("p", i, [1, 2, 3, 4], torch.randint(5, 60, (6,), generator=g).tolist(), [], "x")
            for i in range(4)]


def _update(tiny_model, precision: str, sgd: bool = False):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = model.parameters()
    opt = torch.optim.SGD(params, lr=1e-2) if sgd else torch.optim.AdamW(params, lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    loss_fn = POLICY_LOSSES.get("gspo").bind({"eps_low": 0.2, "eps_high": 0.2})
    res = gspo_update(model, opt, sched, loss_fn, _rollouts(), torch.tensor([1.0, -1.0, 0.5, -0.5]), 0, 2, 1.0,
                      precision=precision)
    return model, before, opt, res


def test_bf16_update_keeps_fp32_master_weights_and_optimizer_state(tiny_model):
    model, before, opt, res = _update(tiny_model, "bfloat16")
    assert res.applied == 2 and res.skipped == 0
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(s["exp_avg"].dtype == torch.float32 for s in opt.state.values())
    # fp32 masters take updates far below bf16's resolution (lr 1e-3 on weights ~0.02)
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert changed


def test_bf16_update_follows_the_fp32_update(tiny_model):
    m16, before, _, r16 = _update(tiny_model, "bfloat16", sgd=True)
    m32, _, _, r32 = _update(tiny_model, "float32", sgd=True)
    assert abs(r16.metrics["rl/loss"] - r32.metrics["rl/loss"]) < 0.05
    # SGD steps follow the gradients: bf16 ones point the way fp32 ones do (Adam's normalisation
    # would blow up the sign noise of tiny gradient entries, so it is not compared)
    d16 = torch.cat([(v - before[k]).flatten() for k, v in m16.state_dict().items()])
    d32 = torch.cat([(v - before[k]).flatten() for k, v in m32.state_dict().items()])
    assert torch.nn.functional.cosine_similarity(d16, d32, dim=0) > 0.9


def test_bf16_logprobs_are_fp32_tensors(tiny_model):
    from transformers import AutoModelForCausalLM

    from posttrain.core.devices import autocast
    from posttrain.rl.logprobs import response_logprobs

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32).eval()
    ro = _rollouts()
    batch = collate([r.prompt_token_ids for r in ro], [r.token_ids for r in ro], 0)
    with torch.no_grad(), autocast("cpu", "bfloat16"):
        lp16 = response_logprobs(model, batch)
    with torch.no_grad():
        lp32 = response_logprobs(model, batch)
    assert lp16.dtype == torch.float32
    torch.testing.assert_close(lp16, lp32, atol=0.1, rtol=0.0)


@pytest.mark.skipif(not fast_bf16("cpu"), reason=f"no fast bf16 on this CPU: {resolve_dtype('auto', 'cpu').reason}")
def test_bf16_matmul_is_faster_where_auto_picks_it():
    a32 = torch.randn(1024, 1024)
    a16 = a32.bfloat16()

    def best(x: torch.Tensor) -> float:
        torch.mm(x, x)
        times = []
        for _ in range(5):
            t = time.perf_counter()
            torch.mm(x, x)
            times.append(time.perf_counter() - t)
        return min(times)

    assert best(a16) < best(a32)


def test_auto_dtype_is_written_to_the_summary(tiny_model, tiny_task, tmp_path):
    from posttrain.core.config import load_config
    from posttrain.rl import trainer as rl

    ov = [f"model.path={tiny_model}", f"data.train={tiny_task[0]}", f"data.eval={tiny_task[1]}",
          "data.max_eval_rows=4", "rollout.backend=hf", "rollout.prompts_per_step=2", "rollout.group_size=2",
          "rollout.max_new_tokens=4", "train.steps=1", "eval.every=0", "model.dtype=auto", "engine.dtype=auto",
          f"reward.components=[{{name: '{PLUGIN}:digit_fraction'}}]", "reward.workers=1"]
    summary = rl.run(load_config(rl.Config, None, ov), tmp_path / "run")
    want = resolve_dtype("auto", "cpu")
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["trainer/dtype"] == summary["trainer/dtype"] == want.dtype
    assert on_disk["engine/dtype"] == want.dtype and on_disk["engine/dtype_reason"] == want.reason
    from transformers import AutoModelForCausalLM
    saved = AutoModelForCausalLM.from_pretrained(summary["final_model"])
    assert saved.dtype == torch.float32  # the master weights are what is saved
