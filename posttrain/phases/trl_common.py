"""Shared mechanics of the phases built on TRL trainers (sft, mpo, rm, rft).

Config sections (train loop, LoRA, evaluation), the start model with `model.init: tiny`,
the TRL/transformers `TrainingArguments` keywords, callbacks that write the trainer's logs
and greedy evaluations (rollouts.evaluate, the one definition) to the run directory, and
the atomic save of `final/`.
"""

from __future__ import annotations

import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from pydantic import Field

from posttrain.core.config import ConfigError, ModelConfig, OptimConfig, Section
from posttrain.core.devices import DtypeChoice, master_dtype, resolve_dtype
from posttrain.core.distributed import barrier, is_main, main_first, world_size
from posttrain.core.models import save_hf
from posttrain.core.run_dir import INIT_MODEL_DIR, RunDir
from posttrain.core.stop import StopFlag
from posttrain.tasks.tiny_vision import make_tiny_from_config
from rewards.config import RewardConfig, default_reward
from rewards.scorer import Scorer
from rollouts.evaluate import EvalResult, hf_greedy_eval


class TrainLoop(Section):
    max_steps: int = Field(200, ge=1, description="Optimizer steps.")
    batch_size: int = Field(64, ge=1, description="Per-device micro-batch size.")
    grad_accum: int = Field(1, ge=1)
    max_length: int | None = Field(256, description="Truncate sequences to this many tokens.")
    logging_steps: int = Field(25, ge=1)
    save_steps: int = Field(500, ge=1, description="Checkpoint every N steps (for --resume).")
    save_total_limit: int = 2
    seed: int = 0
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward to save memory (TRL's default is on; "
        "worth it for large models, pure extra compute for small ones).")


class LoraSection(Section):
    enabled: bool = False
    r: int = 8
    alpha: int = 16
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    merge: bool = Field(True, description="Merge the adapters into the base weights in final/ "
                                          "(false saves the adapter folder instead).")


class EvalSection(Section):
    every: int = Field(0, ge=0, description="Greedy evaluation every N steps (0: only before and after).")
    reward: RewardConfig = Field(default_factory=lambda: default_reward("exact", workers=1),
                                 description="Reward whose mean over greedy completions is eval/accuracy.")
    max_rows: int | None = Field(200, description="Held-out rows to evaluate (None: all).")
    max_new_tokens: int = 16
    batch_size: int = 64
    stop_at_accuracy: float | None = Field(
        None, ge=0.0, le=1.0, description="SFT only: stop once greedy accuracy on a dev slice of the "
        "training rows reaches this (checked every `stop_every` steps); max_steps stays the cap.")
    stop_every: int = Field(50, ge=1)
    stop_rows: int = Field(200, ge=1, description="Training rows (with answers) used as the dev slice.")


def resolve_model_path(model: ModelConfig, train_path: str | None, run: RunDir) -> str:
    """The model folder to start from; `init: tiny` builds one from the training rows."""
    if model.init == "tiny":
        out = run.path / INIT_MODEL_DIR
        with main_first():  # under torchrun: rank 0 builds it, the others reuse it
            if (out / "config.json").is_file():  # resume: reuse the same initial model
                return str(out)
            if not train_path:
                raise ConfigError("model.init=tiny needs a local training file (data.train) to train the tokenizer on")
            make_tiny_from_config(model, train_path, out)
        return str(out)
    if not model.path:
        raise ConfigError("field 'model.path' is required unless model.init=tiny; set model.path=DIR")
    return model.path


def scheduler_name(optim: OptimConfig) -> str:
    """transformers' name: its plain "constant" would silently skip the warmup."""
    if optim.scheduler == "constant" and optim.warmup_steps > 0:
        return "constant_with_warmup"
    return optim.scheduler


def precision(model: ModelConfig) -> DtypeChoice:
    """The phase's compute dtype: `model.dtype`, with `auto` decided for `model.device`."""
    return resolve_dtype(model.dtype, model.device, autocast_trainer=True)


def weights_dtype(model: ModelConfig) -> str:
    """The dtype to load the trained model in: fp32 master weights when computing in bf16."""
    return master_dtype(precision(model).dtype)


def training_kwargs(train: TrainLoop, optim: OptimConfig, model: ModelConfig, out_dir: Path) -> dict[str, Any]:
    """Keywords shared by SFTConfig / DPOConfig / RewardConfig (all TrainingArguments). bf16 (given,
    or chosen by `auto`) is TrainingArguments' own mixed precision, on CPU too (torch autocast)."""
    on_cpu = model.device == "cpu"
    dtype = precision(model).dtype
    return dict(
        output_dir=str(out_dir), max_steps=train.max_steps, per_device_train_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum, learning_rate=optim.lr,
        lr_scheduler_type=scheduler_name(optim), warmup_steps=optim.warmup_steps, weight_decay=optim.weight_decay,
        adam_beta1=optim.betas[0], adam_beta2=optim.betas[1], max_grad_norm=optim.max_grad_norm,
        logging_steps=train.logging_steps, save_steps=train.save_steps, save_total_limit=train.save_total_limit,
        seed=train.seed, data_seed=train.seed, report_to=[], disable_tqdm=True, use_cpu=on_cpu,
        bf16=dtype == "bfloat16", fp16=(dtype == "float16" and not on_cpu),
        dataloader_num_workers=0, remove_unused_columns=False, gradient_checkpointing=train.gradient_checkpointing,
    )


def lora_config(lora: LoraSection, task_type: Literal["CAUSAL_LM", "SEQ_CLS"] = "CAUSAL_LM"):
    if not lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=lora.target_modules, task_type=task_type)


def shared_dataset(rows: list[dict], run: RunDir, name: str) -> Any:
    """A `datasets.Dataset` of rows. Under torchrun it lives in RUN_DIR/.datasets/<name> (written by
    rank 0), so the cache files TRL writes for it (DPO's precomputed reference log-probs, read by
    every rank) sit in a folder all ranks share, not in one process's temp folder."""
    from datasets import Dataset, load_from_disk  # datasets: heavy, imported when a phase runs

    if world_size() <= 1:
        return Dataset.from_list(rows)
    path = run.path / ".datasets" / name
    with main_first():
        if is_main():
            shutil.rmtree(path, ignore_errors=True)
            Dataset.from_list(rows).save_to_disk(str(path))
    return load_from_disk(str(path))


def last_checkpoint(out_dir: Path) -> str | None:
    """Newest complete `checkpoint-N` folder written by the trainer, if any."""
    if not out_dir.is_dir():
        return None
    done = [p for p in out_dir.glob("checkpoint-*") if (p / "trainer_state.json").is_file()]
    return str(max(done, key=lambda p: int(p.name.split("-")[-1]))) if done else None


def save_final(model, tokenizer, final: Path, merge: bool = True) -> Path:
    """Save model + tokenizer to `final/` atomically (temp folder, then rename).

    A PEFT model is merged into its base (merge=True) or saved as an adapter folder.
    """
    if hasattr(model, "merge_and_unload") and merge:
        model = model.merge_and_unload()
    if is_main():  # under torchrun every rank holds the same weights; rank 0 writes them
        save_hf(model, tokenizer, final)
    barrier()
    return final


def run_dir_callback(run: RunDir, prefix: str, step_offset: int = 0):
    """A TrainerCallback that appends every trainer log line to RUN_DIR/metrics.jsonl.

    `step_offset` places a later stage's steps after an earlier stage's in the run's log."""
    from transformers import TrainerCallback

    class _Log(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                run.log(step_offset + state.global_step, {_key(prefix, k): v for k, v in logs.items()})

    return _Log()


def _key(prefix: str, k: str) -> str:
    if "/" in k:
        return k
    if k.startswith("eval_"):
        return f"eval/{k[5:]}"
    return f"{prefix}/{k}"


class Evaluator:
    """Greedy accuracy of the model in training on held-out rows (rollouts.evaluate), with
    the phase's eval reward; `close()` stops its reward workers."""

    def __init__(self, ev: EvalSection, rows: list[dict]):
        self.ev, self.rows = ev, rows
        self.scorer: Any = None

    def __call__(self, model, tokenizer, rows: list[dict] | None = None) -> EvalResult:
        if self.scorer is None:  # started on first use: a phase without held-out rows starts no workers
            self.scorer = Scorer.from_config(self.ev.reward, max_failed_fraction=1.0)
        return hf_greedy_eval(model, tokenizer, self.rows if rows is None else rows, self.scorer,
                              self.ev.max_new_tokens, self.ev.batch_size)

    def close(self) -> None:
        if self.scorer is not None:
            self.scorer.close()


def accuracy_callback(run: RunDir, tokenizer, evaluator: Evaluator, every: int):
    """A TrainerCallback logging `eval/...` to the run every `every` steps (0: never)."""
    from transformers import TrainerCallback

    class _Acc(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if every and state.global_step % every == 0 and state.global_step < state.max_steps:
                run.log(state.global_step, evaluator(model, tokenizer).metrics)

    return _Acc()


def stop_at_accuracy_callback(run: RunDir, tokenizer, evaluator: Evaluator, rows: list[dict], every: int,
                              threshold: float):
    """A TrainerCallback that ends training once greedy accuracy on `rows` (a dev slice of
    the training data, never the held-out set) reaches `threshold`, checked every `every`
    steps; logged as `dev/accuracy`. Stops SFT at partial competence by measurement
    rather than by a step count whose outcome varies from run to run."""
    from transformers import TrainerCallback

    class _Stop(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % every:
                return
            acc = evaluator(model, tokenizer, rows).accuracy
            stop = acc >= threshold
            run.log(state.global_step, {"dev/accuracy": acc, "sft/stopped_at_accuracy": float(stop)})
            if stop:
                control.should_training_stop = True

    return _Stop()


@contextmanager
def preemptible(trainer) -> Iterator[StopFlag]:
    """Around `trainer.train()`: SIGTERM/SIGINT make the trainer save a checkpoint at the
    end of the current step and stop (a second signal stops at once); `flag.preempted`
    tells the phase to skip its final evaluation and final/ (posttrain.core.stop)."""
    from transformers import TrainerCallback

    flag = StopFlag()

    class _Stop(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if flag.requested:
                control.should_save = control.should_training_stop = True

    trainer.add_callback(_Stop())
    flag.install()
    try:
        yield flag
    finally:
        flag.restore()


def preempted_summary(run: RunDir, phase: str, step: int, t0: float) -> dict[str, Any]:
    """The summary of a phase stopped by a signal: its checkpoint, no final/."""
    summary = {"phase": phase, "steps": step, "interrupted": True, "preempted": True, "final": None,
               "checkpoint": last_checkpoint(run.checkpoints), "wall_seconds": round(time.time() - t0, 1)}
    run.write_summary(summary)
    return summary
