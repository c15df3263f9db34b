"""posttrain's GSPO trainer as a benchmark contender (the real trainer, driven step by step)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

from posttrain.core.config import apply_overrides, build_config, read_yaml
from posttrain.pipeline.demo import DEMO_CONFIGS
from posttrain.rl import trainer as rl
from posttrain.rl.trainer import GSPOTrainer


class FixedLength:
    """A Generator proxy that samples exactly max_tokens (ignore_eos) and counts tokens."""

    def __init__(self, inner: Any, force: bool = True):
        self.inner, self.force, self.tokens = inner, force, 0

    @property
    def weight_version(self) -> int:
        return self.inner.weight_version

    def generate(self, prompts, sampling, step: int = 0):
        if self.force and sampling.temperature > 0:
            sampling = replace(sampling, ignore_eos=True)
        outs = self.inner.generate(prompts, sampling, step)
        if sampling.temperature > 0:
            self.tokens += sum(len(o.token_ids) for o in outs)
        return outs

    def update_weights(self, state_dict, version: int) -> None:
        self.inner.update_weights(state_dict, version)

    def close(self) -> None:
        self.inner.close()


def gspo_config(model_path: str, train: str, prompts_per_step: int | None, group: int | None,
                max_tokens: int | None, lr: float | None,
                reward: str, eval_path: str | None = None, enforce_eager: bool = True,
                skip_uniform_groups: bool = True, seed: int = 0, extra: list[str] = (),
                dtype: str = "float32") -> Any:
    data = read_yaml(DEMO_CONFIGS / "rl.yaml")  # the demo's engine/algo settings; sizes set below
    data.update(model={"path": model_path, "dtype": dtype, "device": "cpu"},
                data={"train": train, "eval": eval_path, "shuffle": True, "seed": seed})
    data["engine"].update(enforce_eager=enforce_eager, dtype=dtype)
    for key, value in (("prompts_per_step", prompts_per_step), ("group_size", group), ("max_new_tokens", max_tokens)):
        if value is not None:  # None keeps the demo's value
            data["rollout"][key] = value
    data["algo"]["skip_uniform_groups"] = skip_uniform_groups
    if lr is not None:
        data["optim"]["lr"] = lr
    data["reward"] = {"components": [{"name": reward}], "workers": 1, "timeout_s": 30}
    data["eval"] = {"every": 0, "reward": "exact"}
    data["train"] = {"steps": 100000, "seed": seed, "checkpoint_every": 0}
    apply_overrides(data, list(extra))
    return build_config(rl.Config, data, "bench")


def make_trainer(cfg: Any, run_dir: Path, force_length: bool = True) -> Any:
    shutil.rmtree(run_dir, ignore_errors=True)
    trainer = GSPOTrainer(cfg, Path(run_dir))
    trainer.generator = FixedLength(trainer.generator, force_length)
    return trainer
