"""Greedy exact-match accuracy of a causal LM on dataset rows (HF `generate`).

A row is correct when the decoded completion, stripped, equals the stripped `answer`.
Prompts are rendered with the tokenizer's chat template (generation prompt added).
"""

from __future__ import annotations

import time
from typing import Any

from posttrain.data import chat_prompt_ids, prompt_messages


def render_prompts(tokenizer, rows: list[dict[str, Any]]) -> list[list[int]]:
    return [chat_prompt_ids(tokenizer, prompt_messages(row)) for row in rows]


def greedy_completions(model, tokenizer, prompts: list[list[int]], max_new_tokens: int = 16,
                       batch_size: int = 64) -> list[str]:
    """Decode greedy continuations of token-id prompts (left-padded batches)."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    texts: list[str] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            width = max(len(p) for p in chunk)
            ids = torch.tensor([[pad] * (width - len(p)) + p for p in chunk], device=device)  # (B, T)
            mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in chunk], device=device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            texts.extend(tokenizer.batch_decode(out[:, width:], skip_special_tokens=True))
    if was_training:
        model.train()
    return texts


def greedy_accuracy(model, tokenizer, rows: list[dict[str, Any]], max_new_tokens: int = 16,
                    batch_size: int = 64) -> dict[str, Any]:
    """{"eval/accuracy", "eval/n", "eval/seconds"} plus the per-row results under "results"."""
    t0 = time.time()
    texts = greedy_completions(model, tokenizer, render_prompts(tokenizer, rows), max_new_tokens, batch_size)
    correct = [t.strip() == str(r["answer"]).strip() for t, r in zip(texts, rows)]
    return {
        "eval/accuracy": sum(correct) / max(len(rows), 1),
        "eval/n": len(rows),
        "eval/seconds": round(time.time() - t0, 2),
        "results": [{"id": r.get("id"), "completion": t, "correct": c} for r, t, c in zip(rows, texts, correct)],
    }


def accuracy_callback(run, tokenizer, rows: list[dict[str, Any]], every: int, max_new_tokens: int,
                      batch_size: int):
    """A TrainerCallback logging `eval/accuracy` to the run every `every` steps (0: never)."""
    from transformers import TrainerCallback

    class _Acc(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if every and state.global_step % every == 0 and state.global_step < state.max_steps:
                res = greedy_accuracy(model, tokenizer, rows, max_new_tokens, batch_size)
                res.pop("results")
                run.log(state.global_step, res)

    return _Acc()


def stop_at_accuracy_callback(run, tokenizer, rows: list[dict[str, Any]], every: int, threshold: float,
                              max_new_tokens: int, batch_size: int):
    """A TrainerCallback that ends training once greedy accuracy on `rows` (a dev slice of
    the training data, never the held-out set) reaches `threshold`, checked every `every`
    steps; logged as `dev/accuracy`. Stops SFT at partial competence by measurement
    rather than by a step count whose outcome varies from run to run."""
    from transformers import TrainerCallback

    class _Stop(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % every:
                return
            acc = greedy_accuracy(model, tokenizer, rows, max_new_tokens, batch_size)["eval/accuracy"]
            stop = acc >= threshold
            run.log(state.global_step, {"dev/accuracy": acc, "sft/stopped_at_accuracy": float(stop)})
            if stop:
                control.should_training_stop = True

    return _Stop()
