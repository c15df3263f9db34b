"""`posttrain sft`: supervised fine-tuning with TRL's SFTTrainer.

What TRL does: tokenization with the chat template, completion-only loss masks, LoRA
via PEFT, the optimizer loop and checkpoints. What this module adds: our dataset
contract and several weighted sources (posttrain.phases.sft_data), `model.init: tiny`, greedy
exact-match evaluation on held-out rows, and the run-directory contract
(metrics.jsonl, config.yaml, summary.json, final/ as a HF folder with the tokenizer).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from hints.inject import check_template
from posttrain.core.config import ConfigError, ModelConfig, OptimConfig, Section
from posttrain.core.data import DatasetError, load_rows
from posttrain.core.models import is_image_text_model, load_causal_lm, load_processor, load_tokenizer
from posttrain.core.run_dir import FINAL_DIR, RunDir
from posttrain.phases.sft_data import check_lengths, load_source, mix_sources, to_dataset
from posttrain.phases.trl_common import (
    EvalSection,
    Evaluator,
    LoraSection,
    TrainLoop,
    accuracy_callback,
    last_checkpoint,
    lora_config,
    preempted_summary,
    precision,
    preemptible,
    resolve_model_path,
    run_dir_callback,
    save_final,
    stop_at_accuracy_callback,
    training_kwargs,
    weights_dtype,
)


class DataSource(Section):
    path: str | None = Field(None, description="Local .jsonl/.json/.parquet file.")
    name: str | None = Field(None, description="A `datasets` name or local dataset folder (instead of path).")
    subset: str | None = None
    split: str = "train"
    weight: float = Field(1.0, ge=0.0, description="Relative share of this source in the mix.")


class SFTData(Section):
    train: list[DataSource] | str | None = Field(
        None, description="A file path, or a list of weighted sources (required to run; null in templates).")
    eval: str | None = Field(None, description="Held-out rows (id, prompt, answer) for greedy accuracy.")
    mix_rows: int | None = Field(None, description="Rows in the weighted mix (default: sum of source sizes).")
    seed: int = 0
    hinted_copies: int = Field(
        0, ge=0, le=5, description="Per row with 'hints', this many more examples whose prompt carries the hint "
        "of a distinct random level: a model trained from scratch reads hints in RL only if SFT showed it "
        "hinted prompts (a large pretrained model already does).")
    hint_template: str | None = Field(None, description="How the hint is appended (default: hints' template); "
                                                        "use the RL stage's hints.template.")
    task: str | list[str] | None = Field(None, description="Train and evaluate only on rows whose 'task' field "
                                                          "is this (or one of these): an expert trained on one "
                                                          "task of a multi-task file.")

    @field_validator("hint_template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return v if v is None else check_template(v)

    def sources(self) -> list[DataSource]:
        if self.train is None:
            raise ConfigError("field 'data.train' is not set; pass data.train=PATH (or a list of sources)")
        return [DataSource(path=self.train)] if isinstance(self.train, str) else list(self.train)


class SFTOptions(Section):
    completion_only_loss: bool = Field(True, description="Loss on completion tokens only (false: whole text).")
    packing: bool = False


class Config(Section):
    phase: Literal["sft"] = "sft"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: SFTData
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=2e-5))
    train: TrainLoop = Field(default_factory=TrainLoop)
    sft: SFTOptions = Field(default_factory=SFTOptions)
    lora: LoraSection = Field(default_factory=LoraSection)
    eval: EvalSection = Field(default_factory=EvalSection)


def outputs(cfg: Config, stage_dir: Path) -> dict[str, str | None]:
    """The model, and the training file when it is one file (an RFT stage can mix it into its retraining)."""
    return {"model": str(stage_dir / FINAL_DIR), "sft_data": cfg.data.train if isinstance(cfg.data.train, str) else None}


def build_train_dataset(data: SFTData, tokenizer=None, max_length: int | None = None):
    srcs = data.sources()
    if not srcs:
        raise ConfigError("field 'data.train' is an empty list; give at least one source")
    loaded = [load_source(s.path, s.name, s.subset, s.split, data.hinted_copies, data.seed, data.hint_template,
                          task=data.task) for s in srcs]
    for src in loaded if tokenizer is not None else []:
        check_lengths(src, tokenizer, max_length)
    if len(loaded) == 1 and data.mix_rows is None:
        return to_dataset(loaded[0])
    return to_dataset(mix_sources(loaded, [s.weight for s in srcs], data.mix_rows, data.seed))


def _tasks(task: str | list[str]) -> list[str]:
    return [task] if isinstance(task, str) else list(task)


def load_eval_rows(data: SFTData, max_rows: int | None) -> list[dict]:
    if not data.eval:
        return []
    rows = load_rows(data.eval)
    if data.task:
        rows = [r for r in rows if r.get("task") in _tasks(data.task)]
        if not rows:
            raise DatasetError(f"{data.eval}: no held-out rows with task {data.task!r} (data.task)")
    return rows[:max_rows] if max_rows else rows


def dev_rows(cfg: "Config") -> list[dict]:
    """The first `eval.stop_rows` rows of the first local training file (dataset contract), of
    `data.task` when set (an expert stops on its own task)."""
    path = _first_local_path(cfg.data)
    if path is None:
        raise ConfigError("eval.stop_at_accuracy needs a local data.train file in the dataset contract "
                          "(rows with 'prompt' and 'answer'); unset eval.stop_at_accuracy otherwise")
    rows = load_rows(path)
    if cfg.data.task:
        rows = [r for r in rows if r.get("task") in _tasks(cfg.data.task)]
    return rows[: cfg.eval.stop_rows]


def _first_local_path(data: SFTData) -> str | None:
    return next((s.path for s in data.sources() if s.path), None)


def make_trainer(cfg: Config, run: RunDir, model_path: str, train_ds, evaluator: Evaluator):
    from trl import SFTConfig, SFTTrainer  # trl: heavy, imported when a phase runs

    # an image-text model trains and evaluates through its processor (TRL's vision collator)
    tokenizer = (load_processor(model_path, cfg.model.trust_remote_code) if is_image_text_model(model_path)
                 else load_tokenizer(model_path, cfg.model.trust_remote_code))
    model = load_causal_lm(model_path, weights_dtype(cfg.model), cfg.model.trust_remote_code)
    args = SFTConfig(**training_kwargs(cfg.train, cfg.optim, cfg.model, run.checkpoints),
                     max_length=cfg.train.max_length, packing=cfg.sft.packing,
                     completion_only_loss=cfg.sft.completion_only_loss, dataset_num_proc=None)
    callbacks = [run_dir_callback(run, "sft")]
    if evaluator.rows and cfg.eval.every:
        callbacks.append(accuracy_callback(run, tokenizer, evaluator, cfg.eval.every))
    if cfg.eval.stop_at_accuracy is not None:
        callbacks.append(stop_at_accuracy_callback(run, tokenizer, evaluator, dev_rows(cfg), cfg.eval.stop_every,
                                                   cfg.eval.stop_at_accuracy))
    return SFTTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tokenizer,
                      peft_config=lora_config(cfg.lora), callbacks=callbacks)


def _evaluate(trainer, tokenizer, evaluator: Evaluator, run: RunDir, step: int) -> float | None:
    if not evaluator.rows:
        return None
    res = evaluator(trainer.model, tokenizer)
    run.log(step, res.metrics)
    return res.accuracy


def run(cfg: Config, run_dir: Path, resume: bool = False) -> dict:
    """Train, evaluate before/after, save RUN_DIR/final; returns the summary."""
    t0 = time.time()
    run = RunDir(run_dir, "sft")
    run.start(cfg, resume)
    model_path = resolve_model_path(cfg.model, _first_local_path(cfg.data), run)
    train_ds = build_train_dataset(cfg.data, load_tokenizer(model_path, cfg.model.trust_remote_code),
                                   cfg.train.max_length)
    evaluator = Evaluator(cfg.eval, load_eval_rows(cfg.data, cfg.eval.max_rows))
    try:
        trainer = make_trainer(cfg, run, model_path, train_ds, evaluator)
        tokenizer = trainer.processing_class
        ckpt = last_checkpoint(run.checkpoints) if resume else None
        acc0 = None if ckpt else _evaluate(trainer, tokenizer, evaluator, run, 0)
        t_train = time.time()
        with preemptible(trainer) as stop:
            out = trainer.train(resume_from_checkpoint=ckpt)
        train_s = time.time() - t_train
        step = trainer.state.global_step
        if stop.preempted:
            return preempted_summary(run, "sft", step, t0)
        acc = _evaluate(trainer, tokenizer, evaluator, run, step)
    finally:
        evaluator.close()
    save_final(trainer.model, tokenizer, run.final, merge=cfg.lora.merge)
    summary = {"phase": "sft", "steps": step, "train_loss": out.training_loss, "train_rows": len(train_ds),
               "eval/accuracy_start": acc0, "eval/accuracy": acc, "train_seconds": round(train_s, 1),
               "wall_seconds": round(time.time() - t0, 1), "start_model": model_path,
               "final": str(run.final), **precision(cfg.model).as_metrics("trainer")}
    run.write_summary(summary)
    return summary
