"""Held-out preference metrics: policy log-prob margins and reward-model ranking.

`pair_margins` renders each pair the way TRL does for conversational data (the chat
template over prompt + side; the side's tokens are those after the prompt rendered with
the generation prompt) and sums the side's token log-probs.
"""

from __future__ import annotations

from typing import Any

import torch


def _side_ids(tokenizer, prompt: list[dict], side: list[dict]) -> tuple[list[int], int]:
    def ids(msgs, gen):
        out = tokenizer.apply_chat_template(msgs, add_generation_prompt=gen, tokenize=True)
        return list(out["input_ids"] if hasattr(out, "keys") else out)

    p = ids(prompt, True)
    full = ids(prompt + side, False)
    n = 0
    while n < min(len(p), len(full)) and p[n] == full[n]:
        n += 1
    return full, n


def completion_logps(model, tokenizer, prompts: list[list[dict]], sides: list[list[dict]],
                     batch_size: int = 32) -> list[float]:
    """Summed log p(side | prompt) per row (right-padded batches)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    encoded = [_side_ids(tokenizer, p, s) for p, s in zip(prompts, sides)]
    out: list[float] = []
    model.eval()
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            chunk = encoded[i:i + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.tensor([x + [pad] * (width - len(x)) for x, _ in chunk], device=device)  # (B, T)
            attn = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x, _ in chunk], device=device)
            logits = model(input_ids=ids, attention_mask=attn).logits[:, :-1].float()  # (B, T-1, V)
            logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)  # (B, T-1)
            pos = torch.arange(width - 1, device=device).unsqueeze(0)
            starts = torch.tensor([n for _, n in chunk], device=device).unsqueeze(1)
            mask = (pos >= starts - 1) & (attn[:, 1:] == 1)  # predicts tokens n..end
            out.extend((logp * mask).sum(-1).tolist())
    return out


def pair_margins(model, tokenizer, pairs: list[dict[str, Any]], batch_size: int = 32) -> dict[str, float]:
    """Mean log p(chosen) - log p(rejected) and the fraction of pairs with a positive margin."""
    prompts = [p["prompt"] for p in pairs]
    chosen = completion_logps(model, tokenizer, prompts, [p["chosen"] for p in pairs], batch_size)
    rejected = completion_logps(model, tokenizer, prompts, [p["rejected"] for p in pairs], batch_size)
    margins = [c - r for c, r in zip(chosen, rejected)]
    n = max(len(margins), 1)
    return {"eval/margin": sum(margins) / n, "eval/pair_accuracy": sum(m > 0 for m in margins) / n,
            "eval/logp_chosen": sum(chosen) / n, "eval/logp_rejected": sum(rejected) / n, "eval/pairs": len(margins)}


def reward_scores(model, tokenizer, prompts: list[list[dict]], sides: list[list[dict]],
                  batch_size: int = 32) -> list[float]:
    """Scalar reward (the single logit) of a sequence-classification model per (prompt, side)."""
    device = next(model.parameters()).device
    texts = [tokenizer.apply_chat_template(p + s, tokenize=False) for p, s in zip(prompts, sides)]
    out: list[float] = []
    model.eval()
    side = tokenizer.padding_side
    tokenizer.padding_side = "right"
    try:
        with torch.no_grad():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True,
                                add_special_tokens=False).to(device)
                out.extend(model(**enc).logits[:, 0].float().tolist())
    finally:
        tokenizer.padding_side = side
    return out


def ranking_accuracy(model, tokenizer, pairs: list[dict[str, Any]], batch_size: int = 32) -> dict[str, float]:
    """Fraction of pairs the reward model scores chosen above rejected (ties count half)."""
    prompts = [p["prompt"] for p in pairs]
    rc = reward_scores(model, tokenizer, prompts, [p["chosen"] for p in pairs], batch_size)
    rr = reward_scores(model, tokenizer, prompts, [p["rejected"] for p in pairs], batch_size)
    n = max(len(rc), 1)
    wins = sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(rc, rr))
    return {"eval/accuracy": wins / n, "eval/margin": sum(c - r for c, r in zip(rc, rr)) / n, "eval/pairs": len(rc)}
