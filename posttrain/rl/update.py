"""One GSPO policy update on a scored rollout batch: the "update" step of the loop.

Reads as: collate -> old log-probs -> shuffled minibatches -> loss -> guarded step.
A non-finite loss or gradient skips that minibatch (parameters unchanged) and is
reported with the sample ids; the caller aborts after K bad steps in a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from posttrain.core.devices import autocast
from posttrain.losses import kl_penalty
from posttrain.rl.logprobs import ResponseBatch, collate, response_logprobs
from posttrain.rl.mixed import WorkingCopy
from posttrain.rl.offpolicy import correction_weights, mismatch_metrics
from posttrain.rl.policy_losses import POLICY_LOSSES
from rollouts.types import Rollout


@dataclass
class UpdateResult:
    metrics: dict[str, float] = field(default_factory=dict)
    bad_sample_ids: list[str] = field(default_factory=list)
    applied: int = 0  # optimizer steps taken
    skipped: int = 0  # minibatches skipped for non-finite loss/grad


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _engine_logprobs(rollouts: list[Rollout], batch: ResponseBatch) -> torch.Tensor | None:
    """The sampler's per-token log-probs as (N, R), or None when some rollout lacks them."""
    if any(len(r.logprobs) != len(r.token_ids) for r in rollouts):
        return None
    out = torch.zeros(batch.response_mask.shape, device=batch.response_mask.device)  # (N, R)
    for i, r in enumerate(rollouts):
        out[i, :len(r.logprobs)] = torch.tensor(r.logprobs, device=out.device)
    return out


def update_settings(cfg: Any, pad_id: int, precision: str) -> dict[str, Any]:
    """The keyword arguments of `gspo_update` that come from the config: the same in every process."""
    return dict(loss_fn=POLICY_LOSSES.get(cfg.algo.loss).bind(cfg.algo.loss_args), pad_id=pad_id,
                num_minibatches=cfg.algo.num_minibatches, max_grad_norm=cfg.optim.max_grad_norm,
                old_logprobs=cfg.algo.old_logprobs,
                correction=(cfg.correction_mode(), cfg.off_policy.level, cfg.off_policy.clip), precision=precision)


def minibatch_indices(n: int, num_minibatches: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
    """The shuffled minibatches of an n-sample batch: what one update steps through, in order."""
    return torch.tensor_split(torch.randperm(n, generator=generator), min(num_minibatches, n))


def gspo_update(model: Any, optimizer: Any, scheduler: Any, loss_fn: Callable, rollouts: list[Rollout],
                advantages: torch.Tensor, pad_id: int, num_minibatches: int, max_grad_norm: float,
                old_logprobs: str = "trainer", generator: torch.Generator | None = None,
                correction: tuple[str, str, float] = ("none", "sequence", 2.0),
                precision: str = "float32",
                vision: Callable[[list[Rollout]], dict[str, torch.Tensor]] | None = None,
                minibatches: Sequence[torch.Tensor] | None = None, loss_scales: Sequence[float] | None = None,
                agree: Callable[[bool], bool] | None = None, working: WorkingCopy | None = None,
                ref_model: Any = None, kl_coef: float = 0.0) -> UpdateResult:
    """`loss_fn(logprobs, old_logprobs, advantages, response_mask) -> (loss, metrics)`, its settings bound
    (posttrain.rl.policy_losses). `correction` = (mode, level, clip) of the off-policy correction
    (posttrain.rl.offpolicy); it needs trainer old log-probs and the engine's, and weighs the advantages.
    `precision=bfloat16` runs the forward passes under bf16 autocast (fp32 weights, gradients and
    optimizer state; log-probs in fp32 from the bf16 logits). With `working` (a bf16 WorkingCopy of
    `model`, posttrain.rl.mixed) the passes run on that copy instead, without autocast: its gradients
    move to `model`'s fp32 parameters, which the optimizer steps, and it is refreshed after each step.
    `vision(rollouts)` gives an image-text model its pixel inputs.

    A trainer worker (posttrain.rl.workers) holds a slice of each global minibatch: `minibatches` are
    its local index sets (default: `minibatch_indices` of the whole batch), `loss_scales` the factor
    each minibatch's loss is multiplied by before backward (so the gradients its group averages equal
    the single-process gradient), and `agree(ok)` is True only when every worker's loss is finite
    (all skip together, or none does). `ref_model` with `kl_coef > 0` adds `kl_coef * kl_penalty` to
    each minibatch's loss (algo.kl_coef): the reference log-probs are one no-grad forward per batch."""
    result = UpdateResult()
    if not rollouts:
        return result
    device = next(model.parameters()).device
    batch = collate([r.prompt_token_ids for r in rollouts], [r.token_ids for r in rollouts], pad_id)
    if vision is not None:
        batch.vision = vision(rollouts)
    batch = batch.to(device)
    adv = advantages.to(device=device, dtype=torch.float32)  # (N,)
    model.train()
    net, amp = (working.forward_model(), "float32") if working is not None else (model, precision)
    engine = _engine_logprobs(rollouts, batch)  # (N, R) or None
    if old_logprobs == "engine":
        if engine is None:
            raise ValueError("algo.old_logprobs=engine, but the generator returned no log-probs for every token")
        old = engine
    else:
        with torch.no_grad(), autocast(device, amp):
            old = response_logprobs(net, batch)  # (N, R)
    ref = None
    if ref_model is not None and kl_coef > 0:  # the fp32 reference model: autocast in bf16 runs
        with torch.no_grad(), autocast(device, precision):
            ref = response_logprobs(ref_model, batch)  # (N, R)
    off_metrics: dict[str, float] = {}
    if engine is not None and old_logprobs != "engine":
        off_metrics = mismatch_metrics(old, engine, batch.response_mask)
        if correction[0] != "none":
            w, m = correction_weights(old, engine, batch.response_mask, *correction)
            adv = adv * w if w.dim() == 1 else adv.unsqueeze(-1) * w  # (N,) or (N, R)
            off_metrics.update(m)
    if minibatches is None:
        minibatches = minibatch_indices(len(rollouts), num_minibatches, generator)
    agree = agree or bool
    collected: dict[str, list[float]] = {}
    for k, mb in enumerate(minibatches):
        sub = batch.select(mb)
        optimizer.zero_grad(set_to_none=True)  # before the forward: last step's gradients are not kept through it
        with autocast(device, amp):
            lp = response_logprobs(net, sub)  # (b, R)
        loss, m = loss_fn(lp, old[mb], adv[mb], sub.response_mask)
        if ref is not None:  # loss = policy loss + beta * KL(pi_theta || pi_ref)
            kl, kl_metrics = kl_penalty(lp, ref[mb], sub.response_mask)
            loss = loss + kl_coef * kl
            m = {**m, **kl_metrics}
        ids = [f"{rollouts[i].prompt_id}#{rollouts[i].sample_idx}" for i in mb.tolist()]
        finite = bool(torch.isfinite(loss))
        if not agree(finite):
            result.skipped += 1
            result.bad_sample_ids += [] if finite else ids
            continue
        (loss if loss_scales is None else loss * loss_scales[k]).backward()
        if working is not None:
            working.grads_to_master()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if hasattr(grad_norm, "full_tensor"):  # sharded parameters: the norm is a DTensor, the same on every rank
            grad_norm = grad_norm.full_tensor()
        if not torch.isfinite(grad_norm):
            optimizer.zero_grad(set_to_none=True)
            result.skipped += 1
            result.bad_sample_ids += ids
            continue
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)  # no gradients held between steps (rollouts run meanwhile)
        scheduler.step()
        if working is not None:
            working.refresh()
        result.applied += 1
        scale = 1.0 if loss_scales is None else loss_scales[k]  # a worker's share of the global loss
        m = {**m, "rl/loss": float(loss.detach()) * scale, "rl/grad_norm": float(grad_norm)}
        for k, v in m.items():
            collected.setdefault(k, []).append(v)
    result.metrics = {**off_metrics, **{k: _mean(v) for k, v in collected.items()}}
    result.metrics["rl/minibatches_skipped"] = float(result.skipped)
    return result
