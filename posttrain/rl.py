"""`posttrain rl`: GSPO with Ray+vLLM rollouts.

A step reads: prompts (+ hints) -> generate -> score -> advantages -> update -> sync.
Checkpoints are atomic and hold model, optimizer, scheduler, RNG, data position and
hint state, so `--resume` continues the same prompt order.
"""

from __future__ import annotations

import math
import signal
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from hints.config import HintsConfig
from posttrain.config import (PHASE_CONFIGS, DataConfig, EngineConfig, ModelConfig, OptimConfig, RayConfig,
                              RewardSpec, Section)
from posttrain.losses import POLICY_LOSSES
from rewards.config import RewardConfig


class RolloutConfig(Section):
    backend: Literal["vllm", "hf"] = Field("vllm", description="vllm: Ray actors with vLLM; hf: in-process.")
    prompts_per_step: int = Field(16, ge=1)
    group_size: int = Field(8, ge=2, description="G responses per prompt.")
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    timeout_s: float = Field(600.0, description="Deadline for one step's rollouts.")
    sync_timeout_s: float = Field(120.0, description="Deadline for a weight sync to every engine.")
    max_restarts: int = Field(3, description="Ray restarts of a dead rollout actor.")


class AlgoConfig(Section):
    loss: str = Field("gspo", description="Registered policy loss: gspo, gspo_token, grpo.")
    eps_low: float = 3e-4
    eps_high: float = 4e-4
    num_minibatches: int = Field(4, ge=1, description="Updates per rollout batch (the GSPO paper uses 4).")
    old_logprobs: Literal["trainer", "engine"] = Field(
        "trainer", description="pi_old from a trainer forward (exact) or from the engine's sampling logprobs.")
    skip_uniform_groups: bool = Field(
        True, description="Leave groups whose rewards are all equal (zero advantage) out of the update.")
    max_bad_steps: int = Field(3, ge=1, description="Abort after this many steps in a row with non-finite loss/grad.")

    @field_validator("loss")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in POLICY_LOSSES:
            raise ValueError(f"unknown policy loss {v!r}; known: {', '.join(POLICY_LOSSES.names())}")
        return v


class TrainConfig(Section):
    steps: int = Field(100, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(0, ge=0, description="0 = only at the end and on SIGTERM.")
    keep_checkpoints: int = 2


class ExtraEval(Section):
    """A further held-out set evaluated with the main one (e.g. a reasoning set that
    alignment must not hurt): its mean reward is logged as `eval/<name>`."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Metric key: eval/<name>, eval/<name>/failed.")
    data: str = Field(..., description="Held-out JSONL (id, prompt, answer, ...).")
    reward: str = Field("exact", description="Reward whose mean is eval/<name>.")
    max_rows: int | None = None


class EvalConfig(Section):
    every: int = Field(10, ge=0, description="Greedy held-out eval every N steps (0 = start and end only).")
    reward: str = Field("exact", description="Reward whose mean is 'eval/accuracy'.")
    max_new_tokens: int | None = None
    extra_evals: list[ExtraEval] = Field(default_factory=list, description="More held-out sets, eval/<name> each.")

    @field_validator("extra_evals")
    @classmethod
    def _unique(cls, v: list[ExtraEval]) -> list[ExtraEval]:
        names = [e.name for e in v]
        dup = {n for n in names if names.count(n) > 1} | ({"accuracy"} & set(names))
        if dup:
            raise ValueError(f"eval.extra_evals names must be unique and not 'accuracy' (got {sorted(dup)}); rename them")
        return v


def _default_reward() -> RewardConfig:
    return RewardConfig(components=[RewardSpec(name="exact")])


class Config(Section):
    phase: Literal["rl"] = "rl"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5))
    reward: RewardConfig = Field(default_factory=_default_reward)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    hints: HintsConfig = Field(default_factory=HintsConfig)

    @model_validator(mode="after")
    def _plain_hints_need_trainer_logprobs(self) -> "Config":
        if self.hints.enabled and self.hints.train_prompt == "plain" and self.algo.old_logprobs == "engine":
            raise ValueError("hints.train_prompt=plain trains hinted responses on the prompt without the hint, "
                             "but algo.old_logprobs=engine holds log-probs computed with it: set "
                             "algo.old_logprobs=trainer")
        return self


PHASE_CONFIGS.add("rl", Config)


def run(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    from posttrain.rl_trainer import GSPOTrainer

    trainer = GSPOTrainer(cfg, Path(run_dir), resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.close()


class StopFlag:
    """SIGTERM/SIGINT ask the loop to checkpoint and exit after the current step."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass

    def _handle(self, signum: int, frame: Any) -> None:
        self.requested = True

    def restore(self) -> None:
        for sig, h in self._old.items():
            signal.signal(sig, h)


def finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)


def now() -> float:
    return time.monotonic()


def set_seed(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
