"""The phase table: the one list of phases that the CLI, the pipeline and the config
loader all read.

Each phase module exposes `Config` (a pydantic model with a `phase` literal),
`run(cfg, run_dir, resume=False) -> summary` and `outputs(cfg, stage_dir) -> {slot: path}`
(what it leaves for later pipeline stages). The table holds module paths as strings, so
reading it imports no phase (nor TRL, ray or vllm).

A pipeline stage names earlier stages' outputs by slot (`from: {model: sft, prompts: filter}`);
`inputs` says which config field each slot fills, `outputs` which slots a phase produces,
`data` which fields the pipeline's own `data.train` / `data.eval` fill.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from posttrain.core.config import ConfigError, Section, apply_overrides, build_config, read_yaml


@dataclass(frozen=True)
class Phase:
    name: str
    module: str
    help: str
    inputs: dict[str, str] = field(default_factory=dict)
    outputs: tuple[str, ...] = ("model",)
    data: dict[str, str] = field(default_factory=dict)
    in_pipeline: bool = True

    def load(self) -> ModuleType:
        try:
            return importlib.import_module(self.module)
        except ImportError as e:
            raise ConfigError(f"phase {self.name!r} needs {self.module}, which cannot be imported ({e})") from None

    def config_class(self) -> type[Section]:
        return self.load().Config


_TRAIN_EVAL = {"train": "data.train", "eval": "data.eval"}
PHASES: dict[str, Phase] = {p.name: p for p in (
    Phase("sft", "posttrain.phases.sft", "Supervised fine-tuning (TRL SFTTrainer; LoRA, weighted dataset mixes).",
          inputs={"model": "model.path", "dataset": "data.train"}, outputs=("model", "sft_data"), data=_TRAIN_EVAL),
    Phase("mpo", "posttrain.phases.mpo",
          "Mixed Preference Optimization: DPO + BCO pair (with delta) + NLL on preference pairs.",
          inputs={"model": "model.path", "pairs": "data.train"}, data={"eval": "data.eval_rows"}),
    Phase("rl", "posttrain.rl.trainer", "GSPO reinforcement learning with Ray+vLLM rollouts.\n\n"
          "Learning per second (docs/rl_speed.md): rollout.max_staleness=0|1 (1: generate step k+1 while "
          "step k updates) with rollout.partial_rollouts=finish|restart; dynamic_sampling.{enabled, max_rounds, "
          "min_informative_groups} (DAPO: sample more prompts until enough groups have unequal rewards); "
          "off_policy.{mode=auto|none|tis|mis, level=sequence|token, clip} (engine-vs-trainer log-prob "
          "correction; auto is tis with max_staleness 1 or a non-fp32 engine); overlong.{mode=none|mask|"
          "soft_penalty, buffer, penalty} (responses cut at rollout.max_new_tokens).\n\n"
          "Scale (docs/scale.md): trainer.{strategy=single|ddp|fsdp, num_workers, num_gpus_per_worker, "
          "num_cpus_per_worker, backend=auto|gloo|nccl, timeout_s, placement} (ddp/fsdp: the policy in "
          "num_workers Ray actors, one torch.distributed group, sharded checkpoints).",
          inputs={"model": "model.path", "prompts": "data.train", "hints": "hints.init_state"},
          outputs=("model", "hints"), data=_TRAIN_EVAL),
    Phase("rft", "posttrain.phases.rft",
          "Rejection-sampling fine-tuning: sample k, keep verified, SFT on the kept set.",
          inputs={"model": "model.path", "start_model": "sft.start_model", "prompts": "data.prompts",
                  "sft_data": "sft.extra"},
          outputs=("model", "prompts", "accuracy", "pairs"), data={"train": "data.prompts", "eval": "data.eval"}),
    Phase("filter", "posttrain.phases.filter",
          "Keep the prompts whose accuracy under a model is strictly between 0 and 1.",
          inputs={"model": "model.path", "prompts": "data.prompts", "accuracy": "reuse"},
          outputs=("model", "prompts", "accuracy"), data={"train": "data.prompts"}),
    Phase("align", "posttrain.rl.align", "Alignment RL: GSPO over a reward mix (IFEval constraints, formats, "
          "judge, reward model) with a guard on held-out task accuracy.",
          inputs={"model": "model.path", "prompts": "data.train"}),
    Phase("cot", "posttrain.phases.cot.stage",
          "LongCoT data: collect, k paths with confidence, two-level judge into tiers, review, score and upsample.",
          inputs={"model": "model.path"}, outputs=("model", "sft_data"), data={"train": "data.sources"}),
    Phase("merge", "posttrain.phases.merge",
          "Merge experts that share a base (linear, TIES, DARE via PEFT); keep the best candidate on their tasks.",
          inputs={"model": "model.path", "experts": "experts"}),
    Phase("rm", "posttrain.phases.rm",
          "Bradley-Terry reward model (TRL RewardTrainer), optional length-debias stage.", in_pipeline=False),
)}


def get_phase(name: Any) -> Phase:
    if name not in PHASES:
        raise ConfigError(f"unknown phase {name!r}; known: {', '.join(PHASES)}")
    return PHASES[name]


def load_phase_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Section:
    """Load a YAML whose `phase:` key names its phase (a run's saved config.yaml, a shipped config)."""
    data = apply_overrides(read_yaml(path), overrides)
    phase = data.get("phase")
    if phase not in PHASES:
        raise ConfigError(f"{path}: field 'phase' must be one of {', '.join(PHASES)} (got {phase!r})")
    return build_config(PHASES[phase].config_class(), data, str(path))
