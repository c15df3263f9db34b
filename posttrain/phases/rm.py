"""`posttrain rm`: a Bradley-Terry reward model with TRL's RewardTrainer.

Stage 1 trains -log sigmoid(r(chosen) - r(rejected)) on all pairs. The optional
length-debias stage (Keye-VL 1.5's annealing) continues on the pairs whose chosen
response is the shorter one, at its own (usually lower) learning rate, so the model
does not learn "longer is better". The output `final/` loads as
`AutoModelForSequenceClassification` with one logit, with the tokenizer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Literal

from pydantic import Field

from posttrain.core.config import ModelConfig, OptimConfig, Section
from posttrain.core.models import load_tokenizer, torch_dtype
from posttrain.core.run_dir import RunDir, final_output
from posttrain.phases.pair_eval import ranking_accuracy
from posttrain.phases.pairs import check_pair_lengths, load_pairs
from posttrain.phases.trl_common import (
    EvalSection,
    LoraSection,
    TrainLoop,
    last_checkpoint,
    lora_config,
    preempted_summary,
    preemptible,
    resolve_model_path,
    run_dir_callback,
    save_final,
    training_kwargs,
    weights_dtype,
)


class RMData(Section):
    train: str = Field(..., description="Preference pairs JSONL (prompt, chosen, rejected).")
    eval: str | None = Field(None, description="Held-out pairs: ranking accuracy before/after.")


class LengthDebias(Section):
    enabled: bool = False
    steps: int = Field(50, ge=1)
    lr: float = 5e-5
    min_pairs: int = Field(8, ge=1, description="Skip the stage (with a log line) below this many short-chosen pairs.")


class Config(Section):
    phase: Literal["rm"] = "rm"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: RMData
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-4))
    train: TrainLoop = Field(default_factory=lambda: TrainLoop(max_steps=200, batch_size=32))
    length_debias: LengthDebias = Field(default_factory=LengthDebias)
    lora: LoraSection = Field(default_factory=LoraSection)
    eval: EvalSection = Field(default_factory=EvalSection)


outputs = final_output


def _side_text(side: list[dict]) -> str:
    return "".join(m["content"] for m in side)


def short_chosen(pairs: list[dict]) -> list[dict]:
    """Pairs whose chosen response is strictly shorter (in characters) than the rejected one.

    >>> a = [{"role": "assistant", "content": "ok"}]
    >>> b = [{"role": "assistant", "content": "longer"}]
    >>> len(short_chosen([{"chosen": a, "rejected": b}, {"chosen": b, "rejected": a}]))
    1
    """
    return [p for p in pairs if len(_side_text(p["chosen"])) < len(_side_text(p["rejected"]))]


def load_reward_model(path: str, model: ModelConfig, tokenizer):
    from transformers import AutoModelForSequenceClassification  # transformers: heavy, when a phase runs

    rm = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch_dtype(weights_dtype(model)), trust_remote_code=model.trust_remote_code)
    rm.config.pad_token_id = tokenizer.pad_token_id  # the head reads the last non-pad token
    return rm


def make_trainer(model, tokenizer, pairs: list[dict], train: TrainLoop, optim: OptimConfig, cfg: Config,
                 out_dir: Path, run: RunDir, peft_config=None, step_offset: int = 0):
    from datasets import Dataset  # datasets and trl: heavy, imported when a phase runs
    from trl import RewardConfig, RewardTrainer

    args = RewardConfig(**training_kwargs(train, optim, cfg.model, out_dir), max_length=train.max_length)
    return RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(pairs),
                         processing_class=tokenizer, peft_config=peft_config,
                         callbacks=[run_dir_callback(run, "rm", step_offset)])


def _evaluate(model, tokenizer, pairs: list[dict], run: RunDir, step: int, tag: str = "") -> dict:
    if not pairs:
        return {}
    res = ranking_accuracy(model, tokenizer, pairs)
    run.log(step, {**res, **({"rm/stage": tag} if tag else {})})
    return res


def _debias(cfg: Config, model, tok, pairs: list[dict], run: RunDir, step0: int) -> int:
    """Run the length-debias stage; returns its steps (0 when skipped)."""
    subset = short_chosen(pairs)
    if len(subset) < cfg.length_debias.min_pairs:
        run.log(step0, {"rm/debias_pairs": len(subset), "rm/debias_skipped": 1})
        return 0
    loop = cfg.train.model_copy(update={"max_steps": cfg.length_debias.steps})
    optim = cfg.optim.model_copy(update={"lr": cfg.length_debias.lr})
    trainer = make_trainer(model, tok, subset, loop, optim, cfg, run.checkpoints / "debias", run,
                           step_offset=step0)
    trainer.train()
    run.log(step0 + trainer.state.global_step, {"rm/debias_pairs": len(subset)})
    return trainer.state.global_step


def run(cfg: Config, run_dir: Path, resume: bool = False) -> dict:
    t0 = time.time()
    run = RunDir(run_dir, "rm")
    run.start(cfg, resume)
    model_path = resolve_model_path(cfg.model, cfg.data.train, run)
    pairs = load_pairs(cfg.data.train)
    eval_pairs = load_pairs(cfg.data.eval, cfg.eval.max_rows) if cfg.data.eval else []
    tok = load_tokenizer(model_path, cfg.model.trust_remote_code)
    check_pair_lengths(cfg.data.train, tok, cfg.train.max_length)
    model = load_reward_model(model_path, cfg.model, tok)
    trainer = make_trainer(model, tok, pairs, cfg.train, cfg.optim, cfg, run.checkpoints, run,
                           lora_config(cfg.lora, "SEQ_CLS"))
    ckpt = last_checkpoint(run.checkpoints) if resume else None
    before = {} if ckpt else _evaluate(trainer.model, tok, eval_pairs, run, 0, "start")
    with preemptible(trainer) as stop:
        out = trainer.train(resume_from_checkpoint=ckpt)
    step = trainer.state.global_step
    if stop.preempted:
        return preempted_summary(run, "rm", step, t0)
    after_bt = _evaluate(trainer.model, tok, eval_pairs, run, step, "bradley_terry")
    model = trainer.model
    if cfg.length_debias.enabled:
        step += _debias(cfg, model, tok, pairs, run, step)
    after = _evaluate(model, tok, eval_pairs, run, step, "final") if cfg.length_debias.enabled else after_bt
    save_final(model, tok, run.final, merge=cfg.lora.merge)
    summary = {"phase": "rm", "steps": step, "train_loss": out.training_loss, "pairs": len(pairs),
               **{f"start/{k}": v for k, v in before.items()}, **after,
               "wall_seconds": round(time.time() - t0, 1), "start_model": model_path, "final": str(run.final)}
    run.write_summary(summary)
    return summary
