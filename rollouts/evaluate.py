"""Greedy evaluation: the one definition of held-out accuracy in posttrain.

    accuracy = mean reward of the greedy (temperature 0) completions of the rows

scored by the evaluation's reward; with a 0/1 verifier (the default `exact`: stripped
completion == stripped answer) it is the fraction of rows answered correctly. A row whose
reward fails counts as wrong and is reported in `eval/failed`. The completions come from
any `Generator`: the Ray+vLLM pool during RL, an `HFGenerator` wrapping the model in
memory during SFT/MPO (`hf_greedy_eval`), the same code in the pipeline, the benchmarks
and the demo summaries.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from posttrain.core.data import chat_prompt_ids, prompt_messages
from posttrain.core.media import has_media
from rollouts.hf import HFGenerator
from rollouts.media import encode_media_rows
from rollouts.types import PromptInput, SamplingSpec


def encode_rows(tokenizer: Any, rows: Sequence[dict[str, Any]], processor: Any = None,
                video_budget: int | None = None) -> list[PromptInput]:
    """Each row's prompt through the chat template, the assistant turn opened; with an image-text
    model's `processor`, rows with images or video become media prompts (rollouts/media.py), a
    video SlowFast-encoded within `video_budget` tokens."""
    if processor is not None and any(has_media(r) for r in rows):
        return encode_media_rows(processor, rows, video_budget)
    return [PromptInput(r["id"], chat_prompt_ids(tokenizer, prompt_messages(r))) for r in rows]


@dataclass
class EvalResult:
    metrics: dict[str, float]  # eval/accuracy, eval/failed, eval/n, eval/seconds, eval/response_len
    rewards: dict[str, float] = field(default_factory=dict)  # row id -> reward (0.0 when it failed)
    completions: dict[str, str] = field(default_factory=dict)  # row id -> greedy completion

    @property
    def accuracy(self) -> float:
        return self.metrics["eval/accuracy"]


def greedy_eval(generator: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], scorer: Any,
                max_new_tokens: int, step: int = 0, processor: Any = None,
                video_budget: int | None = None) -> EvalResult:
    """Greedy completions of `rows` from `generator`, scored by `scorer` (`score(texts, rows).rewards`)."""
    t0 = time.monotonic()
    outs = generator.generate(encode_rows(tokenizer, rows, processor, video_budget), SamplingSpec(n=1, temperature=0.0,
                                                                         max_tokens=max_new_tokens), step=-1 - step)
    rewards = scorer.score([o.text for o in outs], list(rows)).rewards
    values = [v if v is not None else 0.0 for v in rewards]
    metrics = {
        "eval/accuracy": sum(values) / max(len(values), 1),
        "eval/failed": float(sum(v is None for v in rewards)),
        "eval/n": float(len(rows)),
        "eval/seconds": round(time.monotonic() - t0, 3),
        "eval/response_len": sum(len(o.token_ids) for o in outs) / max(len(outs), 1),
    }
    ids = [str(r["id"]) for r in rows]
    return EvalResult(metrics, dict(zip(ids, values)), {i: o.text for i, o in zip(ids, outs)})


def hf_greedy_eval(model: Any, tokenizer: Any, rows: Sequence[dict[str, Any]], scorer: Any,
                   max_new_tokens: int, batch_size: int = 64) -> EvalResult:
    """`greedy_eval` on a model held in this process (e.g. inside a TRL trainer); its
    train/eval mode is restored afterwards. `tokenizer` may be an image-text model's processor."""
    was_training = model.training
    processor = tokenizer if hasattr(tokenizer, "image_processor") else None  # an image-text model's processor
    tokenizer = processor.tokenizer if processor is not None else tokenizer
    try:
        gen = HFGenerator(model, tokenizer, device=None, max_batch=batch_size, processor=processor)
        return greedy_eval(gen, tokenizer, rows, scorer, max_new_tokens, processor=processor)
    finally:
        model.train(was_training)
