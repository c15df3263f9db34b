"""TRL's GRPOTrainer configured as GSPO: the baseline of the rl_step and accuracy workloads."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable


def completion_text(c: Any) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c and isinstance(c[-1], dict):
        return str(c[-1].get("content", ""))
    return str(c)


class TokenCounter:
    """Wraps a per-sample reward as a TRL reward function and counts completion tokens."""

    def __init__(self, fn: Callable[[str, dict], float], answers: dict[str, str] | None = None):
        self.fn, self.tokens, self.calls = fn, 0, 0
        self.__name__ = getattr(fn, "__name__", "reward")

    def __call__(self, prompts=None, completions=None, completion_ids=None, answer=None, **kw) -> list[float]:
        self.calls += 1
        if completion_ids is not None:
            self.tokens += sum(len(ids) for ids in completion_ids)
        answers = answer if answer is not None else [None] * len(completions)
        return [float(self.fn(completion_text(c), {"answer": a})) for c, a in zip(completions, answers)]


def trl_dataset(rows: list[dict[str, Any]]):
    from datasets import Dataset

    return Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}], "answer": r["answer"]}
                              for r in rows])


def gspo_config(out: Path, prompts_per_step: int, group: int, max_tokens: int, lr: float, max_steps: int,
                num_minibatches: int = 4, eps_low: float = 3e-4, eps_high: float = 4e-4, seed: int = 0,
                min_tokens: int | None = None, temperature: float = 1.0, bf16: bool = False) -> Any:
    """GRPOConfig matching posttrain's GSPO step: one generation batch of prompts x group
    completions, split into `num_minibatches` optimizer steps (steps_per_generation). `bf16`:
    TrainingArguments' mixed precision (autocast, fp32 master weights), on CPU too."""
    from trl import GRPOConfig

    completions = prompts_per_step * group
    if completions % num_minibatches:
        raise ValueError(f"{completions} completions do not split into {num_minibatches} minibatches")
    gen_kwargs = {"min_new_tokens": min_tokens} if min_tokens else None
    return GRPOConfig(
        output_dir=str(out), use_cpu=True, importance_sampling_level="sequence", loss_type="grpo", beta=0.0,
        epsilon=eps_low, epsilon_high=eps_high, num_generations=group,
        per_device_train_batch_size=completions // num_minibatches, steps_per_generation=num_minibatches,
        gradient_accumulation_steps=1, max_completion_length=max_tokens, generation_kwargs=gen_kwargs,
        learning_rate=lr, lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0, max_steps=max_steps,
        temperature=temperature, top_p=1.0, logging_steps=1, report_to="none", save_strategy="no", seed=seed,
        data_seed=seed, bf16=bf16, dataloader_num_workers=0, disable_tqdm=True, shuffle_dataset=True,
        # TRL defaults to gradient checkpointing (recompute in backward); posttrain does not, and
        # these models need no memory saving: off, so the baseline is not slowed down.
        gradient_checkpointing=False)


def make_trainer(model_path: str, rows: list[dict[str, Any]], reward: TokenCounter, cfg: Any,
                 callbacks: list[Any]) -> Any:
    from transformers import AutoTokenizer
    from trl import GRPOTrainer

    tok = AutoTokenizer.from_pretrained(model_path)
    trainer = GRPOTrainer(model=model_path, reward_funcs=[reward], args=cfg, train_dataset=trl_dataset(rows),
                          processing_class=tok, callbacks=callbacks)
    timed_generation(trainer)
    return trainer


def timed_generation(trainer: Any) -> None:
    """Accumulate seconds spent in TRL's generation into trainer.bench_generate_s."""
    orig = trainer._generate
    trainer.bench_generate_s = 0.0

    def _generate(*a, **kw):
        t = time.perf_counter()
        try:
            return orig(*a, **kw)
        finally:
            trainer.bench_generate_s += time.perf_counter() - t

    trainer._generate = _generate
