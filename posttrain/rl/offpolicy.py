"""Off-policy correction for the engine-vs-trainer mismatch, as pure tensor functions.

The rollouts were sampled by the engine (pi_engine: a bf16 engine, or weights one
version stale with rollout.max_staleness=1), while the GSPO ratio compares the trainer's
pi_theta with pi_old (the trainer's own forward at the start of the update). The
gradient is then off by w = pi_old / pi_engine per token. Following verl / slime / TRL:

    TIS (truncated IS):  weight = min(w, C)                 (bias traded for variance)
    MIS (masked IS):     weight = w if 1/C <= w <= C else 0 (drop the samples that disagree)

at token level (w_t = exp(old_t - engine_t)) or at sequence level, where w is GSPO's
length-normalised ratio exp(mean_t(old_t - engine_t)) (slime and verl use the plain product
for PPO; the geometric mean keeps the scale of GSPO's own ratio, so one C serves every length).
The weight is detached and multiplies the advantage: for GSPO, min(s*A*w, clip(s)*A*w) =
w * min(s*A, clip(s)*A) for w >= 0, so weighting the advantage is weighting the loss.

>>> old = torch.tensor([[-1.0, -1.0]]); eng = torch.tensor([[-1.0, -3.0]]); m = torch.ones(1, 2)
>>> w, _ = correction_weights(old, eng, m, "tis", "token", clip=2.0)
>>> [round(x, 3) for x in w[0].tolist()]
[1.0, 2.0]
>>> w, _ = correction_weights(old, eng, m, "mis", "sequence", clip=2.0)   # exp(mean(0, 2)) = e > 2
>>> w.tolist()
[0.0]
"""

from __future__ import annotations

import torch
from torch import Tensor


def mismatch_metrics(old_logprobs: Tensor, engine_logprobs: Tensor, response_mask: Tensor) -> dict[str, float]:
    """KL(engine || trainer) per token (k3 estimator on engine samples), and the token ratio's range."""
    mask = response_mask.to(old_logprobs.dtype)  # (B, T)
    n = mask.sum().clamp(min=1)
    log_w = (old_logprobs - engine_logprobs) * mask  # log pi_old/pi_engine, (B, T)
    w = torch.exp(log_w)
    k3 = (w - 1 - log_w) * mask  # >= 0, unbiased for KL(engine||old) on engine samples
    return {"offpolicy/kl": float(k3.sum() / n), "offpolicy/abs_logratio": float(log_w.abs().sum() / n),
            "offpolicy/ratio_max": float(torch.where(mask > 0, w, torch.zeros_like(w)).max()) if w.numel() else 1.0,
            "offpolicy/ratio_min": float(torch.where(mask > 0, w, torch.full_like(w, 1e9)).min()) if w.numel() else 1.0}


def correction_weights(old_logprobs: Tensor, engine_logprobs: Tensor, response_mask: Tensor, mode: str,
                       level: str, clip: float) -> tuple[Tensor, dict[str, float]]:
    """Detached weights, (B,) at sequence level or (B, T) at token level, and
    `offpolicy/masked_frac` / `offpolicy/truncated_frac` (share of sequences or tokens changed)."""
    mask = response_mask.to(old_logprobs.dtype)  # (B, T)
    log_w = (old_logprobs - engine_logprobs).detach() * mask
    if level == "sequence":
        w = torch.exp(log_w.sum(-1) / mask.sum(-1).clamp(min=1))  # (B,)
        weight = torch.ones_like(w)
    elif level == "token":
        w = torch.exp(log_w)  # (B, T)
        weight = mask
    else:
        raise ValueError(f"unknown off-policy correction level {level!r}; use 'token' or 'sequence'")
    if mode == "tis":
        changed = w > clip
        out = w.clamp(max=clip)
    elif mode == "mis":
        changed = (w > clip) | (w < 1 / clip)
        out = torch.where(changed, torch.zeros_like(w), w)
    elif mode == "none":
        changed, out = torch.zeros_like(w, dtype=torch.bool), torch.ones_like(w)
    else:
        raise ValueError(f"unknown off-policy correction mode {mode!r}; use 'none', 'tis' or 'mis'")
    frac = float((changed.to(weight.dtype) * weight).sum() / weight.sum().clamp(min=1))
    key = "offpolicy/masked_frac" if mode == "mis" else "offpolicy/truncated_frac"
    return out, {key: frac, "offpolicy/weight_mean": float((out * weight).sum() / weight.sum().clamp(min=1))}
