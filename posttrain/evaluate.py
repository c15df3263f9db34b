"""Held-out greedy evaluation through a Generator (the same engines that do rollouts)."""

from __future__ import annotations

import time
from typing import Any, Sequence

from posttrain.data import chat_prompt_ids, prompt_messages
from rollouts.types import PromptInput, SamplingSpec


def encode_rows(tokenizer: Any, rows: Sequence[dict[str, Any]]) -> list[PromptInput]:
    return [PromptInput(r["id"], chat_prompt_ids(tokenizer, prompt_messages(r))) for r in rows]


def greedy_eval(generator: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], scorer: Any,
                max_new_tokens: int, step: int = 0, per_row: dict[str, float] | None = None) -> dict[str, Any]:
    """{"eval/accuracy": mean reward of the greedy completions, "eval/failed": count, ...}.

    Accuracy is the mean of the scorer's composite over rows that scored; a row whose
    reward failed counts as not correct and is reported in "eval/failed". `per_row`, when
    given, is filled with {row id: reward} (0.0 for a failed reward).
    """
    t0 = time.monotonic()
    outs = generator.generate(encode_rows(tokenizer, rows), SamplingSpec(n=1, temperature=0.0,
                                                                         max_tokens=max_new_tokens), step=-1 - step)
    batch = scorer.score([o.text for o in outs], list(rows))
    values = [v if v is not None else 0.0 for v in batch.rewards]
    if per_row is not None:
        per_row.update({str(r["id"]): v for r, v in zip(rows, values)})
    return {
        "eval/accuracy": sum(values) / max(len(values), 1),
        "eval/failed": float(sum(v is None for v in batch.rewards)),
        "eval/n": float(len(rows)),
        "eval/seconds": round(time.monotonic() - t0, 3),
        "eval/response_len": sum(len(o.token_ids) for o in outs) / max(len(outs), 1),
    }
