"""`posttrain mpo`: InternVL's Mixed Preference Optimization on TRL's DPOTrainer.

L = 0.8 * DPO-sigmoid + 0.2 * BCO-pair(delta) + 1.0 * NLL(chosen)   (posttrain.losses.mpo_loss)

TRL expresses the mix with `loss_type=["sigmoid", "bco_pair", "sft"]`, but its
`bco_pair` lost the running-mean shift delta. `MPOTrainer` restores it with the
smallest change: the shifted BCO term
    -log sig(beta*r_c - delta) - log sig(-(beta*r_r - delta)),  r = logp - logp_ref,
equals TRL's unshifted term computed with both reference log-probs raised by delta/beta,
and that shift leaves the DPO term (a difference of r's) and the NLL term unchanged.
So the subclass adds delta/beta to the precomputed reference log-probs of each batch and
updates delta afterwards with the batch's mean reward (TRL's own "rewards/*" metrics,
which therefore read beta*r - delta). delta is the running mean of past batches' mean
rewards (0 before the first batch), saved with each checkpoint.
Departures: TRL's NLL term is the token mean over the chosen responses of the batch.

Image pairs (pairs carrying their prompt's `images` / `video`, e.g. from RFT's scored samples of
image rows) train through the model's processor and TRL's vision collator. TRL cannot precompute
reference log-probs for vision data, so the trainer computes them per batch with the frozen
reference (the same numbers, one more forward per batch) and shifts them by delta as above; the
held-out pair margins go through the same collator, pixels included.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field

from posttrain.core.config import ModelConfig, OptimConfig, Section
from posttrain.core.data import load_rows
from posttrain.core.models import is_image_text_model, load_causal_lm, load_processor, load_tokenizer
from posttrain.core.run_dir import RunDir, final_output
from posttrain.phases.pair_eval import pair_margins
from posttrain.phases.pairs import check_pair_lengths, load_pairs
from posttrain.phases.trl_common import (
    EvalSection,
    Evaluator,
    LoraSection,
    TrainLoop,
    last_checkpoint,
    lora_config,
    preempted_summary,
    preemptible,
    resolve_model_path,
    run_dir_callback,
    save_final,
    shared_dataset,
    training_kwargs,
    weights_dtype,
)

DELTA_FILE = "mpo_delta.json"


class MPOData(Section):
    train: str = Field(..., description="Preference pairs JSONL (prompt, chosen, rejected).")
    eval: str | None = Field(None, description="Held-out pairs: log-prob margin before/after.")
    eval_rows: str | None = Field(None, description="Held-out task rows (id, prompt, answer) for greedy accuracy.")


class MPOOptions(Section):
    beta: float = Field(0.1, gt=0)
    weights: tuple[float, float, float] = Field((0.8, 0.2, 1.0), description="(DPO, BCO pair, NLL) weights.")
    use_delta: bool = Field(True, description="InternVL's running-mean shift in the BCO term (false: TRL's stock).")


class Config(Section):
    phase: Literal["mpo"] = "mpo"
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: MPOData
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-6))
    train: TrainLoop = Field(default_factory=lambda: TrainLoop(max_steps=100, batch_size=16))
    mpo: MPOOptions = Field(default_factory=MPOOptions)
    lora: LoraSection = Field(default_factory=LoraSection)
    eval: EvalSection = Field(default_factory=EvalSection)


outputs = final_output


class RunningMean:
    """Mean of the values seen so far (each batch's mean reward counts once)."""

    def __init__(self, mean: float = 0.0, count: int = 0):
        self.mean, self.count = mean, count

    def update(self, value: float) -> float:
        self.count += 1
        self.mean += (value - self.mean) / self.count
        return self.mean


def mpo_trainer_class():
    """MPOTrainer, built lazily so importing this module does not import TRL."""
    from trl import DPOTrainer  # trl: heavy, imported when a phase runs

    class MPOTrainer(DPOTrainer):
        def __init__(self, *args, use_delta: bool = True, **kwargs):
            super().__init__(*args, **kwargs)
            # vision data: TRL refuses to precompute; the reference log-probs are computed per batch instead
            self.ref_per_batch = use_delta and self._is_vision_dataset
            if use_delta and not self.precompute_ref_logps and not self.ref_per_batch:
                raise ValueError("MPOTrainer's delta needs precompute_ref_log_probs=True in its DPOConfig")
            if self.ref_per_batch:
                self.precompute_ref_logps = True  # TRL's loss then reads the ones put into each batch
            self.use_delta = use_delta
            self.delta = RunningMean()

        def sequence_logps(self, model, inputs):
            """(chosen, rejected) summed completion log-probs of a collated batch under `model`."""
            return self.compute_ref_log_probs(model, inputs)

        def _compute_loss(self, model, inputs, return_outputs):
            if not self.use_delta:
                return super()._compute_loss(model, inputs, return_outputs)
            if self.ref_per_batch:
                ref_c, ref_r = self.sequence_logps(self.ref_model if self.ref_model is not None else model, inputs)
                inputs = {**inputs, "ref_chosen_logps": ref_c, "ref_rejected_logps": ref_r}
            delta = self.delta.mean
            shift = delta / self.beta  # raising both refs by delta/beta subtracts delta from beta*r
            inputs = {**inputs, "ref_chosen_logps": inputs["ref_chosen_logps"] + shift,
                      "ref_rejected_logps": inputs["ref_rejected_logps"] + shift}
            out = super()._compute_loss(model, inputs, return_outputs)
            if self.model.training:
                m = self._metrics["train"]
                batch_mean = (m["rewards/chosen"][-1] + m["rewards/rejected"][-1]) / 2 + delta
                self.delta.update(batch_mean)
                m["mpo/delta"].append(delta)
            return out

        def _save_checkpoint(self, model, trial):
            super()._save_checkpoint(model, trial)
            ckpt = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
            if ckpt.is_dir():
                (ckpt / DELTA_FILE).write_text(json.dumps({"mean": self.delta.mean, "count": self.delta.count}))

        def load_delta(self, ckpt: str | None) -> None:
            path = Path(ckpt) / DELTA_FILE if ckpt else None
            if path and path.is_file():
                state = json.loads(path.read_text())
                self.delta = RunningMean(state["mean"], state["count"])

    return MPOTrainer


def make_trainer(cfg: Config, run: RunDir, model_path: str, train_rows: list[dict]):
    from trl import DPOConfig  # trl: heavy, imported when a phase runs

    vision = is_image_text_model(model_path)  # image pairs: the processor and TRL's vision collator
    tokenizer = (load_processor if vision else load_tokenizer)(model_path, cfg.model.trust_remote_code)
    model = load_causal_lm(model_path, weights_dtype(cfg.model), cfg.model.trust_remote_code)
    args = DPOConfig(**training_kwargs(cfg.train, cfg.optim, cfg.model, run.checkpoints),
                     max_length=cfg.train.max_length, beta=cfg.mpo.beta,
                     loss_type=["sigmoid", "bco_pair", "sft"], loss_weights=list(cfg.mpo.weights),
                     precompute_ref_log_probs=not any("images" in r for r in train_rows))
    return mpo_trainer_class()(model=model, args=args, train_dataset=shared_dataset(train_rows, run, "train"),
                               processing_class=tokenizer, peft_config=lora_config(cfg.lora),
                               callbacks=[run_dir_callback(run, "mpo")], use_delta=cfg.mpo.use_delta)


def image_pair_margins(trainer, pairs: list[dict], batch_size: int = 16) -> dict:
    """`pair_margins` for image pairs, through the trainer's vision collator (pixels included)."""
    chosen, rejected = [], []
    was_training = trainer.model.training
    trainer.model.eval()
    try:
        with torch.no_grad():
            for i in range(0, len(pairs), batch_size):
                batch = trainer.data_collator([dict(p) for p in pairs[i:i + batch_size]])
                c, r = trainer.sequence_logps(trainer.model, {k: v.to(trainer.model.device) if hasattr(v, "to") else v
                                                              for k, v in batch.items()})
                chosen += c.tolist()
                rejected += r.tolist()
    finally:
        trainer.model.train(was_training)
    margins = [c - r for c, r in zip(chosen, rejected)]
    n = max(len(margins), 1)
    return {"eval/margin": sum(margins) / n, "eval/pair_accuracy": sum(m > 0 for m in margins) / n,
            "eval/logp_chosen": sum(chosen) / n, "eval/logp_rejected": sum(rejected) / n, "eval/pairs": len(margins)}


def evaluate(trainer, evaluator: Evaluator, pairs: list[dict]) -> dict:
    model, tokenizer = trainer.model, trainer.processing_class
    if pairs and any("images" in p for p in pairs):
        out = image_pair_margins(trainer, pairs)
    else:
        out = pair_margins(model, tokenizer, pairs) if pairs else {}
    if evaluator.rows:
        out["eval/accuracy"] = evaluator(model, tokenizer).accuracy
    return out


def run(cfg: Config, run_dir: Path, resume: bool = False) -> dict:
    t0 = time.time()
    run = RunDir(run_dir, "mpo")
    run.start(cfg, resume)
    model_path = resolve_model_path(cfg.model, cfg.data.train, run)
    train_rows = load_pairs(cfg.data.train)
    check_pair_lengths(cfg.data.train, load_tokenizer(model_path, cfg.model.trust_remote_code), cfg.train.max_length)
    eval_pairs = load_pairs(cfg.data.eval, cfg.eval.max_rows) if cfg.data.eval else []
    rows = load_rows(cfg.data.eval_rows)[:cfg.eval.max_rows] if cfg.data.eval_rows else []
    trainer = make_trainer(cfg, run, model_path, train_rows)
    tok = trainer.processing_class
    ckpt = last_checkpoint(run.checkpoints) if resume else None
    trainer.load_delta(ckpt)
    evaluator = Evaluator(cfg.eval, rows)
    try:
        before = {} if ckpt else evaluate(trainer, evaluator, eval_pairs)
        if before:
            run.log(0, before)
        with preemptible(trainer) as stop:
            out = trainer.train(resume_from_checkpoint=ckpt)
        step = trainer.state.global_step
        if stop.preempted:
            return preempted_summary(run, "mpo", step, t0)
        after = evaluate(trainer, evaluator, eval_pairs)
    finally:
        evaluator.close()
    run.log(step, after)
    save_final(trainer.model, tok, run.final, merge=cfg.lora.merge)
    summary = {"phase": "mpo", "steps": step, "train_loss": out.training_loss, "pairs": len(train_rows),
               "delta": trainer.delta.mean, **{f"start/{k}": v for k, v in before.items()}, **after,
               "wall_seconds": round(time.time() - t0, 1), "start_model": model_path, "final": str(run.final)}
    run.write_summary(summary)
    return summary
