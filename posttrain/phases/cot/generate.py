"""Step 2 of the LongCoT pipeline: k reasoning paths per prompt, each with a logit-based
confidence.

Paths come from a rollout `Generator` (the Ray + vLLM pool, or transformers in process).
Each path records two confidences, both per token of the path:
- `mean_logprob`: the mean log-probability of its sampled tokens, as the engine reported
  them while sampling;
- `entropy`: the mean entropy (nats) of the model's next-token distribution along the path,
  from one teacher-forced forward pass of the same model (engines report only the top
  log-probs, not the full distribution).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from posttrain.core.data import chat_prompt_ids, prompt_messages


def path_records(groups: list[tuple[dict[str, Any], list[Any]]]) -> list[dict[str, Any]]:
    """One record per sampled path (prompt row fields kept for the judge), engine log-probs averaged."""
    out = []
    for row, rollouts in groups:
        for ro in rollouts:
            n = len(ro.token_ids)
            out.append({**{k: v for k, v in row.items() if k not in ("completion", "hints")},
                        "id": f"{row['id']}#{ro.sample_idx}", "prompt_id": row["id"], "sample_idx": ro.sample_idx,
                        "completion": ro.text, "n_tokens": n,
                        "mean_logprob": sum(ro.logprobs) / n if n else 0.0,
                        "finish_reason": ro.finish_reason})
    return out


@torch.no_grad()
def mean_entropies(model: Any, tokenizer: Any, records: Sequence[dict[str, Any]], batch_size: int = 32) -> list[float]:
    """Mean next-token entropy over each path's completion tokens (teacher-forced, one pass per batch)."""
    model.eval()
    pad = tokenizer.pad_token_id
    out: list[float] = []
    for i in range(0, len(records), batch_size):
        chunk = records[i:i + batch_size]
        prompts = [chat_prompt_ids(tokenizer, prompt_messages(r)) for r in chunk]
        comps = [tokenizer(r["completion"], add_special_tokens=False)["input_ids"] for r in chunk]
        P, R = max(map(len, prompts)), max(1, max(map(len, comps)))
        ids = torch.full((len(chunk), P + R), pad, dtype=torch.long)  # (B, P + R), prompts left-padded
        attn = torch.zeros_like(ids)
        for j, (p, c) in enumerate(zip(prompts, comps)):
            ids[j, P - len(p):P + len(c)] = torch.tensor(p + c, dtype=torch.long)
            attn[j, P - len(p):P + len(c)] = 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids, attention_mask=attn, position_ids=pos).logits[:, P - 1:P - 1 + R].float()
        logp = torch.log_softmax(logits, dim=-1)  # (B, R, V)
        ent = -(logp.exp() * logp).sum(-1)  # (B, R)
        for j, c in enumerate(comps):
            out.append(float(ent[j, :len(c)].mean()) if c else 0.0)
    return out
