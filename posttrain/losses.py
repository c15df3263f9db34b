"""Policy losses as pure tensor functions returning `(loss, metrics)`.

Shapes: `logprobs`, `old_logprobs`, `response_mask` are (B, T); `advantages` is (B,)
(one per sequence) or (B, T) for GSPO-token / GRPO. `loss` is the negated objective,
averaged over the B sequences (each sequence's tokens first averaged over its length),
which is GSPO's plain mean over sequences, not TRL's length-weighted "dapo" mean.

Departures from the papers: none in the math; sequences with an empty response mask
count with length 1 (their contribution is 0) so the loss never divides by zero.
The trainer finds these functions by name, with the settings each declares, in
posttrain.rl.policy_losses; this module imports nothing from posttrain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _lengths(response_mask: Tensor) -> Tensor:
    return response_mask.sum(-1).clamp(min=1)  # (B,)


def _seq_mean(x: Tensor, response_mask: Tensor) -> Tensor:
    return (x * response_mask).sum(-1) / _lengths(response_mask)  # (B,)


def _as_token_advantages(advantages: Tensor, like: Tensor) -> Tensor:
    return advantages.unsqueeze(-1).expand_as(like) if advantages.dim() == 1 else advantages


def _clip_metrics(ratio: Tensor, eps_low: float, eps_high: float, weight: Tensor) -> dict[str, float]:
    with torch.no_grad():
        low = (ratio < 1 - eps_low).to(ratio.dtype)
        high = (ratio > 1 + eps_high).to(ratio.dtype)
        total = weight.sum().clamp(min=1)
        return {
            "rl/clip_frac": float(((low + high) * weight).sum() / total),
            "rl/clip_frac_low": float((low * weight).sum() / total),
            "rl/clip_frac_high": float((high * weight).sum() / total),
            "rl/ratio_mean": float((ratio * weight).sum() / total),
            "rl/ratio_max": float(ratio.max()) if ratio.numel() else 1.0,
            "rl/ratio_min": float(ratio.min()) if ratio.numel() else 1.0,
        }


def gspo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
    variant: str = "sequence",
) -> tuple[Tensor, dict[str, float]]:
    """GSPO (arXiv 2507.18071, eq. 5-7) and GSPO-token (eq. 13-14)."""
    mask = response_mask.to(logprobs.dtype)
    # s_i = exp( (1/|y_i|) * sum_t (log pi_theta - log pi_old) )            (B,)
    log_seq_ratio = _seq_mean(logprobs - old_logprobs, mask)
    seq_ratio = torch.exp(log_seq_ratio)
    if variant == "sequence":
        if advantages.dim() != 1:
            raise ValueError("variant='sequence' takes one advantage per sequence, shape (B,)")
        # J = (1/G) sum_i min(s_i A_i, clip(s_i, 1-eps_low, 1+eps_high) A_i)
        unclipped = seq_ratio * advantages
        clipped = seq_ratio.clamp(1 - eps_low, 1 + eps_high) * advantages
        per_seq = torch.minimum(unclipped, clipped)  # (B,)
        weight = torch.ones_like(seq_ratio)
        ratio_for_metrics = seq_ratio
    elif variant == "token":
        # s_i,t = sg[s_i] * pi_theta(y_i,t) / sg[pi_theta(y_i,t)]: value s_i, gradient per token
        tok_ratio = seq_ratio.detach().unsqueeze(-1) * torch.exp(logprobs - logprobs.detach())  # (B, T)
        adv = _as_token_advantages(advantages, logprobs)
        per_tok = torch.minimum(tok_ratio * adv, tok_ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
        per_seq = _seq_mean(per_tok, mask)  # (1/|y_i|) sum_t
        weight, ratio_for_metrics = mask, tok_ratio
    else:
        raise ValueError(f"unknown GSPO variant {variant!r}; use 'sequence' or 'token'")
    loss = -per_seq.mean()
    metrics = _clip_metrics(ratio_for_metrics.detach(), eps_low, eps_high, weight)
    metrics["rl/log_seq_ratio_mean"] = float(log_seq_ratio.detach().mean()) if log_seq_ratio.numel() else 0.0
    return loss, metrics


def grpo_loss(
    logprobs: Tensor,
    old_logprobs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.28,
) -> tuple[Tensor, dict[str, float]]:
    """Token-level PPO clip (GRPO without KL), sequence-mean aggregation, for comparison."""
    mask = response_mask.to(logprobs.dtype)
    ratio = torch.exp(logprobs - old_logprobs)  # (B, T)
    adv = _as_token_advantages(advantages, logprobs)
    per_tok = torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    loss = -_seq_mean(per_tok, mask).mean()
    return loss, _clip_metrics(ratio.detach(), eps_low, eps_high, mask)


def kl_penalty(
    logprobs: Tensor,
    ref_logprobs: Tensor,
    response_mask: Tensor,
) -> tuple[Tensor, dict[str, float]]:
    """KL(pi_theta || pi_ref) per sampled token with Schulman's k3 estimator, averaged like
    the policy losses (over each response's tokens, then over sequences); the trainer adds
    `kl_coef *` this to the policy loss (GRPO's KL term, arXiv 2402.03300 eq. 4).

        d_t = log pi_ref(y_t) - log pi_theta(y_t)
        k3_t = exp(d_t) - d_t - 1            (>= 0; unbiased for KL on samples of pi_theta)

    Its gradient pulls every token's log-prob back towards the reference model's, with no
    clipping: GSPO's clip range (3e-4) stops the policy term once a sequence moved, not this one.
    """
    mask = response_mask.to(logprobs.dtype)
    d = ref_logprobs - logprobs  # (B, T)
    k3 = torch.exp(d) - d - 1  # (B, T)
    kl = _seq_mean(k3, mask).mean()
    with torch.no_grad():
        tokens = mask.sum().clamp(min=1)
        metrics = {"rl/kl_ref": float(kl), "rl/kl_ref_max": float((k3 * mask).max()) if k3.numel() else 0.0,
                   "rl/logprob_minus_ref": float((-d * mask).sum() / tokens)}
    return kl, metrics


# ---------------------------------------------------------------------------------------------
# MPO (InternVL Mixed Preference Optimization). Owned by the sft/mpo/rm/rft phases.
# ---------------------------------------------------------------------------------------------


def mpo_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor,
    ref_rejected_logps: Tensor,
    chosen_nll: Tensor,
    beta: float,
    delta: float,
    weights: tuple[float, float, float] = (0.8, 0.2, 1.0),
) -> tuple[Tensor, dict[str, float]]:
    """L = w_p * L_DPO-sigmoid + w_q * L_BCO-pair(delta) + w_g * L_NLL(chosen), batch-averaged.

    Inputs are (B,) per-sequence summed log-probs of the responses and the per-sequence
    NLL of the chosen response. With r = logp_policy - logp_ref:
        L_pref    = -log sigmoid(beta * (r_c - r_r))
        L_quality = -log sigmoid(beta * r_c - delta) - log sigmoid(-(beta * r_r - delta))
        L_gen     = chosen_nll
    `delta` is the running mean of past batches' mean reward; `metrics["mpo/reward_mean"]`
    (mean of beta*r_c and beta*r_r over the batch) is the value that updates it.
    """
    r_c = policy_chosen_logps - ref_chosen_logps  # (B,)
    r_r = policy_rejected_logps - ref_rejected_logps  # (B,)
    pref = -F.logsigmoid(beta * (r_c - r_r))  # (B,)
    quality = -F.logsigmoid(beta * r_c - delta) - F.logsigmoid(-(beta * r_r - delta))  # (B,)
    w_p, w_q, w_g = weights
    loss = w_p * pref.mean() + w_q * quality.mean() + w_g * chosen_nll.mean()
    with torch.no_grad():
        rc, rr = beta * r_c, beta * r_r
        metrics = {
            "mpo/loss_pref": float(pref.mean()),
            "mpo/loss_quality": float(quality.mean()),
            "mpo/loss_gen": float(chosen_nll.mean()),
            "mpo/reward_chosen": float(rc.mean()),
            "mpo/reward_rejected": float(rr.mean()),
            "mpo/reward_margin": float((rc - rr).mean()),
            "mpo/reward_accuracy": float((rc > rr).float().mean()),
            "mpo/reward_mean": float(torch.cat([rc, rr]).mean()),
            "mpo/delta": float(delta),
        }
    return loss, metrics
