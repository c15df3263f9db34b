"""The `posttrain rl` config: every section of a GSPO run (values only; the trainer is
posttrain/rl/trainer.py)."""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from hints.config import HintsConfig
from posttrain.core.config import DataConfig, EngineConfig, ModelConfig, OptimConfig, RayConfig, Section
from posttrain.rl.policy_losses import POLICY_LOSSES
from rewards.config import RewardConfig, default_reward


class RolloutConfig(Section):
    backend: Literal["vllm", "hf"] = Field("vllm", description="vllm: Ray actors with vLLM; hf: in-process.")
    prompts_per_step: int = Field(16, ge=1)
    group_size: int = Field(8, ge=2, description="G responses per prompt.")
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(32, ge=1)
    timeout_s: float = Field(600.0, gt=0, description="Deadline for one step's rollouts.")
    sync_timeout_s: float = Field(120.0, gt=0, description="Deadline for a weight sync to every engine.")
    max_restarts: int = Field(3, ge=0, description="Ray restarts of a dead rollout actor.")
    weight_sync: Literal["auto", "object_store", "stream"] = Field(
        "auto", description="How new weights reach the vLLM engines: object_store (one ray.put of the state "
        "dict), stream (size-bounded buckets broadcast over a gloo/NCCL group, checksummed per bucket), or auto "
        "(stream from 256 MiB of engine weights up, where it was faster here; docs/weight_sync.md).")
    sync_bucket_mb: float = Field(256.0, gt=0, description="stream: largest bucket in MiB (a layer is never split).")
    sync_backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="stream: the group's backend; auto = nccl for GPU engines when the trainer sees a GPU, "
        "else gloo.")
    max_staleness: int = Field(
        0, ge=0, le=1, description="0: generate, then update (synchronous). 1: generate step k+1 while step k "
        "updates (one-step off-policy); samples older than this many weight versions are never trained on.")
    partial_rollouts: Literal["finish", "restart"] = Field(
        "finish", description="With max_staleness=1, generations in flight when the weights change: 'finish' "
        "them with the weights they started with (trained one version stale, corrected by off_policy), or "
        "'restart' them with the new weights (on-policy, the overlap is lost). Recorded as rollout/restarted.")
    video_token_budget: int | None = Field(
        None, ge=1, description="Image-text models: visual + marker tokens of one video under SlowFast encoding "
        "(core/video.py); null keeps every frame at its native size.")


class AlgoConfig(Section):
    """The policy loss and how the update uses it.

    Settings of the loss go flat in this section (`algo.eps_low=0.2`) or under `loss_args`;
    each loss declares its own settings and defaults (posttrain.rl.policy_losses), and a
    setting the chosen loss does not declare is an error naming the loss and its settings.
    """

    loss: str = Field("gspo", description="Registered policy loss: gspo, gspo_token, grpo.")
    loss_args: dict[str, float] = Field(
        default_factory=dict, description="Settings of the loss (GSPO: eps_low/eps_high 3e-4/4e-4; GRPO: "
        "0.2/0.28); unset ones take the loss's own defaults.")
    num_minibatches: int = Field(4, ge=1, description="Updates per rollout batch (the GSPO paper uses 4).")
    old_logprobs: Literal["trainer", "engine"] = Field(
        "trainer", description="pi_old from a trainer forward (exact) or from the engine's sampling logprobs.")
    skip_uniform_groups: bool = Field(
        True, description="Leave groups whose rewards are all equal (zero advantage) out of the update.")
    max_bad_steps: int = Field(3, ge=1, description="Abort after this many steps in a row with non-finite loss/grad.")
    kl_coef: float = Field(
        0.0, ge=0.0, description="Weight of a KL penalty to the start model (model.path, e.g. the SFT model), "
        "k3 per token (posttrain.losses.kl_penalty), added to the policy loss; 0: no reference model is loaded.")

    @model_validator(mode="before")
    @classmethod
    def _flat_loss_settings(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        extra = {k: v for k, v in data.items() if k not in cls.model_fields}
        if not extra:
            return data
        args = dict(data.get("loss_args") or {})
        clash = sorted(set(extra) & set(args))
        if clash:
            raise ValueError(f"loss setting(s) {clash} given both flat and under algo.loss_args; give them once")
        return {**{k: v for k, v in data.items() if k in cls.model_fields}, "loss_args": {**args, **extra}}

    @model_validator(mode="after")
    def _loss_and_settings(self) -> "AlgoConfig":
        if self.loss not in POLICY_LOSSES:
            raise ValueError(f"unknown policy loss {self.loss!r}; known: {', '.join(POLICY_LOSSES.names())}")
        loss = POLICY_LOSSES.get(self.loss)
        for key in self.loss_args:
            if key not in loss.settings:
                near = difflib.get_close_matches(key, list(type(self).model_fields), n=1)
                if near:
                    raise ValueError(f"algo.{key} is not a field of the algo section (did you mean algo.{near[0]}?) "
                                     f"nor a setting of loss {self.loss!r} ({', '.join(loss.settings) or 'none'})")
        loss.check(self.loss_args)
        return self


class DynamicSamplingConfig(Section):
    """DAPO's dynamic sampling: a group whose rewards are all equal has zero advantage and
    carries no signal, so sample more prompts (bounded) until the step has enough informative groups."""

    enabled: bool = Field(False, description="Resample until min_informative_groups groups have unequal rewards.")
    max_rounds: int = Field(3, ge=0, description="Extra generation rounds per step at most.")
    min_informative_groups: int | None = Field(
        None, ge=1, description="Informative groups wanted per step (default rollout.prompts_per_step); extra "
        "ones beyond it are dropped (rl/groups_dropped counts them with the uniform ones).")


class OffPolicyConfig(Section):
    """Correction for the engine-vs-trainer log-prob mismatch (bf16 engines, staleness 1): the
    rollout was sampled from pi_engine but the loss assumes pi_old (trainer). Each sample's loss is
    weighted by w = pi_old / pi_engine, truncated (TIS: min(w, clip)) or masked (MIS: 0 outside
    [1/clip, clip]); per token, or per sequence as GSPO's length-normalised ratio. Needs
    algo.old_logprobs=trainer. Mismatch metrics (offpolicy/kl, ratio_max, masked_frac) every step."""

    mode: Literal["auto", "none", "tis", "mis"] = Field(
        "auto", description="auto: tis when it matters (rollout.max_staleness > 0 or a non-fp32 engine), "
        "else none (metrics are still logged).")
    level: Literal["token", "sequence"] = Field(
        "sequence", description="sequence (GSPO's length-normalised ratio) or token (gspo_token/grpo only).")
    clip: float = Field(2.0, gt=1.0, description="TIS cap C on w; MIS keeps 1/C <= w <= C.")


class OverlongConfig(Section):
    """Responses cut at rollout.max_new_tokens (finish_reason 'length')."""

    mode: Literal["none", "mask", "soft_penalty"] = Field(
        "none", description="mask: truncated responses are left out of the loss (DAPO overlong filtering); "
        "soft_penalty: DAPO's length penalty is added to the reward.")
    buffer: int = Field(
        4, ge=1, description="soft_penalty: the last `buffer` tokens before max_new_tokens ramp the penalty "
        "from 0 to -penalty; a truncated response gets -penalty.")
    penalty: float = Field(1.0, ge=0.0, description="soft_penalty: the largest penalty.")


class TrainerConfig(Section):
    """Where the policy trains: in this process (`single`), or in `num_workers` Ray actors that form
    a torch.distributed group (`ddp`: full replicas, gradients all-reduced; `fsdp`: FSDP2, parameters,
    gradients and optimizer state sharded per decoder layer). docs/scale.md."""

    num_workers: int = Field(1, ge=1, description="Trainer processes (Ray actors); 1 with strategy single "
                             "is today's in-process trainer.")
    strategy: Literal["single", "ddp", "fsdp"] = Field(
        "single", description="single: in-process; ddp / fsdp: num_workers Ray actors (posttrain/rl/workers.py).")
    num_gpus_per_worker: float = Field(0.0, ge=0.0, description="GPUs per worker bundle (0: CPU workers).")
    num_cpus_per_worker: float = Field(1.0, gt=0.0, description="CPUs per worker bundle (Ray logical CPUs).")
    backend: Literal["auto", "gloo", "nccl"] = Field(
        "auto", description="torch.distributed backend; auto: nccl with GPUs, gloo on CPU.")
    timeout_s: float = Field(
        600.0, gt=0, description="Bound on every collective and every call into the workers: a dead or hung "
        "worker stops the run within it, with an error naming the worker.")
    placement: Literal["pack", "spread", "strict_spread"] = Field(
        "pack", description="Ray placement group strategy for the worker bundles (spread: across nodes).")

    @model_validator(mode="after")
    def _consistent(self) -> "TrainerConfig":
        if self.strategy == "single" and self.num_workers > 1:
            raise ValueError(f"trainer.num_workers={self.num_workers} needs a distributed strategy, but "
                             "trainer.strategy=single: set trainer.strategy=fsdp (or ddp)")
        if self.backend == "nccl" and self.num_gpus_per_worker == 0:
            raise ValueError("trainer.backend=nccl needs GPUs: set trainer.num_gpus_per_worker (e.g. 1) or "
                             "trainer.backend=gloo")
        if self.strategy == "single" and (self.num_gpus_per_worker or self.backend != "auto"):
            raise ValueError("trainer.num_gpus_per_worker / trainer.backend apply to worker strategies: set "
                             "trainer.strategy=fsdp (or ddp), or use model.device for the single trainer")
        return self

    @property
    def distributed(self) -> bool:
        return self.strategy != "single"

    def resolved_backend(self) -> str:
        """The process-group backend: as given, or nccl when the workers hold GPUs, else gloo."""
        if self.backend != "auto":
            return self.backend
        return "nccl" if self.num_gpus_per_worker > 0 else "gloo"


class TrainConfig(Section):
    steps: int = Field(100, ge=0)
    seed: int = 0
    checkpoint_every: int = Field(0, ge=0, description="0 = only at the end and on SIGTERM.")
    keep_checkpoints: int = Field(2, ge=1)


def _eval_reward() -> RewardConfig:
    return default_reward("exact", workers=1)


class ExtraEval(Section):
    """A further held-out set evaluated with the main one (e.g. a reasoning set that
    alignment must not hurt): its greedy accuracy is logged as `eval/<name>`."""

    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Metric key: eval/<name>, eval/<name>/failed.")
    data: str = Field(..., description="Held-out JSONL (id, prompt, answer, ...).")
    reward: RewardConfig = Field(default_factory=_eval_reward, description="Reward whose mean is eval/<name>.")
    max_rows: int | None = None


class EvalConfig(Section):
    every: int = Field(10, ge=0, description="Greedy held-out eval every N steps (0 = start and end only).")
    reward: RewardConfig = Field(
        default_factory=_eval_reward, description="Reward whose mean over greedy completions is 'eval/accuracy' "
        "(a name is shorthand); an eval never aborts: a row whose reward fails counts as wrong.")
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


class Config(Section):
    phase: Literal["rl"] = "rl"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    ray: RayConfig = Field(default_factory=RayConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    algo: AlgoConfig = Field(default_factory=AlgoConfig)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5))
    reward: RewardConfig = Field(default_factory=default_reward)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    hints: HintsConfig = Field(default_factory=HintsConfig)
    dynamic_sampling: DynamicSamplingConfig = Field(default_factory=DynamicSamplingConfig)
    off_policy: OffPolicyConfig = Field(default_factory=OffPolicyConfig)
    overlong: OverlongConfig = Field(default_factory=OverlongConfig)

    def correction_mode(self) -> str:
        """off_policy.mode with `auto` resolved: TIS where the sampler is not the trainer's policy."""
        if self.off_policy.mode != "auto":
            return self.off_policy.mode
        mismatch = self.rollout.max_staleness > 0 or (self.rollout.backend == "vllm" and self.engine.dtype != "float32")
        return "tis" if mismatch and self.algo.old_logprobs == "trainer" else "none"

    @model_validator(mode="after")
    def _speed_sections(self) -> "Config":
        if self.off_policy.mode in ("tis", "mis") and self.algo.old_logprobs == "engine":
            raise ValueError(f"off_policy.mode={self.off_policy.mode} weighs pi_old(trainer) / pi_engine, but "
                             "algo.old_logprobs=engine makes them the same: set algo.old_logprobs=trainer")
        if self.off_policy.level == "token" and self.algo.loss == "gspo" and self.off_policy.mode in ("tis", "mis"):
            raise ValueError("off_policy.level=token weighs tokens, but algo.loss=gspo has one ratio per sequence: "
                             "set off_policy.level=sequence or algo.loss=gspo_token")
        if self.algo.kl_coef > 0 and self.trainer.distributed:
            raise ValueError(f"algo.kl_coef={self.algo.kl_coef} needs a reference model, which only "
                             "trainer.strategy=single holds for now: set algo.kl_coef=0 or trainer.strategy=single")
        if self.overlong.mode == "soft_penalty" and self.overlong.buffer > self.rollout.max_new_tokens:
            raise ValueError(f"overlong.buffer={self.overlong.buffer} exceeds rollout.max_new_tokens="
                             f"{self.rollout.max_new_tokens}: lower overlong.buffer")
        return self

    @model_validator(mode="after")
    def _plain_hints_need_trainer_logprobs(self) -> "Config":
        if self.hints.enabled and self.hints.train_prompt == "plain" and self.algo.old_logprobs == "engine":
            raise ValueError("hints.train_prompt=plain trains hinted responses on the prompt without the hint, "
                             "but algo.old_logprobs=engine holds log-probs computed with it: set "
                             "algo.old_logprobs=trainer")
        return self
