"""The GSPO trainer: set-up, the step (generate -> score -> advantages -> update ->
sync), evaluation, checkpoints and resume. Config lives in posttrain/rl.py."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch

from posttrain.advantages import group_advantages
from posttrain.checkpoint import latest_checkpoint, load_trainer_state, save_checkpoint, set_rng_state
from posttrain.data import PromptSampler, dataset_fingerprint, load_rows
from posttrain.evaluate import encode_rows, greedy_eval
from posttrain.gspo import gspo_update
from posttrain.losses import POLICY_LOSSES
from posttrain.policy import load_policy, save_hf
from posttrain.rl import Config, StopFlag, set_seed
from posttrain.run_dir import RunDir
from posttrain.schedules import make_optimizer
from rollouts.types import Rollout, SamplingSpec

log = logging.getLogger(__name__)


class TrainingAborted(RuntimeError):
    pass


class GSPOTrainer:
    def __init__(self, cfg: Config, run_dir: Path, resume: bool = False):
        from hints.controller import HintController
        from rewards.scorer import Scorer
        from rollouts.factory import make_generator

        self.cfg, self.run = cfg, RunDir(run_dir, cfg.phase)
        if not cfg.data.train:
            raise ValueError("data.train is not set: pass data.train=FILE.jsonl")
        if not cfg.model.path:
            raise ValueError("model.path is not set: pass model.path=HF_FOLDER (or use `posttrain pipeline` with model.init=tiny)")
        set_seed(cfg.train.seed)
        self.rows = load_rows(cfg.data.train)
        self.eval_rows = load_rows(cfg.data.eval)[: cfg.data.max_eval_rows] if cfg.data.eval else []
        self.sampler = PromptSampler(len(self.rows), cfg.data.seed, cfg.data.shuffle, dataset_fingerprint(self.rows))
        self.step, self.bad_steps, self.wall_offset = 0, 0, 0.0
        ckpt = latest_checkpoint(self.run.checkpoints) if resume else None
        model_path = str(ckpt / "model") if ckpt else cfg.model.path
        self.model, self.tok = load_policy(model_path, cfg.model.dtype, cfg.model.device, cfg.model.trust_remote_code)
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg.optim, cfg.train.steps * cfg.algo.num_minibatches)
        self.loss_fn = POLICY_LOSSES.get(cfg.algo.loss)
        self.torch_gen = torch.Generator().manual_seed(cfg.train.seed)
        self.scorer = Scorer.from_config(cfg.reward)
        self.eval_scorer = self._eval_scorer(cfg.eval.reward)
        self.extra_evals = [(e.name, load_rows(e.data)[: e.max_rows], self._eval_scorer(e.reward))
                            for e in cfg.eval.extra_evals]
        self.eval_hooks: list[Any] = []  # fn(step, metrics) -> extra metrics (or None), after each eval
        self.hints = HintController(cfg.hints, self.rows)
        if ckpt:
            self._load(ckpt)
        self.run.write_config(cfg)
        self.generator = make_generator(cfg.rollout.backend, model_path, cfg.engine, cfg.ray, cfg.model.device,
                                        seed=cfg.train.seed, unit_timeout_s=cfg.rollout.timeout_s,
                                        sync_timeout_s=cfg.rollout.sync_timeout_s,
                                        max_restarts=cfg.rollout.max_restarts,
                                        trust_remote_code=cfg.model.trust_remote_code)
        if ckpt:  # engines loaded the checkpoint folder; stamp them with its version
            self.generator.update_weights(self.model.state_dict(), self.step)
        if cfg.hints.enabled and cfg.hints.search != "none":  # minimal-hint search samples with the policy
            from hints.probe import prompt_encoder, reward_judge
            r = cfg.rollout
            self.hints.attach(self.generator, prompt_encoder(self.tok),
                              reward_judge(self.scorer, cfg.hints.correct_threshold),
                              SamplingSpec(temperature=r.temperature, top_p=r.top_p,
                                           max_tokens=r.max_new_tokens, seed=cfg.train.seed))
        self.stop = StopFlag()

    def _eval_scorer(self, reward: str) -> Any:
        """Eval rewards get the reward timeout in a worker process; a failed row counts as wrong."""
        from rewards.scorer import Scorer

        return Scorer([{"name": reward}], timeout_s=self.cfg.reward.timeout_s, workers=1, max_failed_fraction=1.0)

    # ------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "sampler": self.sampler.state_dict(), "hints": self.hints.state_dict(),
                "torch_gen": self.torch_gen.get_state(), "bad_steps": self.bad_steps,
                "wall_s": self.wall_offset + (time.monotonic() - self.t_start)}

    def _load(self, ckpt: Path) -> None:
        state = load_trainer_state(ckpt)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        self.hints.load_state_dict(state["hints"])
        self.torch_gen.set_state(state["torch_gen"])
        self.bad_steps, self.step = state["bad_steps"], state["step"]
        self.wall_offset = state.get("wall_s", 0.0)
        set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", ckpt, self.step)

    def checkpoint(self) -> Path:
        return save_checkpoint(self.run.checkpoints, self.step, self.model, self.tok, self._state(),
                               self.cfg.train.keep_checkpoints)

    # ------------------------------------------------------------------ the step

    def generate(self, step: int) -> tuple[list[tuple[dict, int]], list[Rollout]]:
        rows = [self.rows[i] for i in self.sampler.next_batch(self.cfg.rollout.prompts_per_step)]
        prepared = self.hints.prepare(rows, step)
        r = self.cfg.rollout
        spec = SamplingSpec(n=r.group_size, temperature=r.temperature, top_p=r.top_p,
                            max_tokens=r.max_new_tokens, seed=self.cfg.train.seed)
        rollouts = self.generator.generate(encode_rows(self.tok, [row for row, _ in prepared]), spec, step)
        for ro, (row, level) in zip(rollouts, [p for p in prepared for _ in range(r.group_size)]):
            ro.meta["hint_level"] = level
        if self.cfg.hints.train_prompt == "plain":  # train hinted responses as answers to the bare question
            hinted = [row for row, (_, level) in zip(rows, prepared) if level > 0]
            bare = {p.prompt_id: p.token_ids for p in encode_rows(self.tok, hinted)}
            for ro in rollouts:
                if ro.meta["hint_level"] > 0:
                    ro.prompt_token_ids = bare[ro.prompt_id]
        return prepared, rollouts

    def score(self, prepared: list[tuple[dict, int]], rollouts: list[Rollout], step: int):
        G = self.cfg.rollout.group_size
        samples = [row for row, _ in prepared for _ in range(G)]
        batch = self.scorer.score([r.text for r in rollouts], samples)
        for k, (row, level) in enumerate(prepared):
            self.hints.observe(row["id"], level, batch.rewards[k * G:(k + 1) * G], step)
        rewards = torch.tensor([math.nan if v is None else v for v in batch.rewards], dtype=torch.float64)
        return batch, rewards

    def select(self, rollouts: list[Rollout], rewards: torch.Tensor) -> tuple[list[Rollout], torch.Tensor]:
        """Advantages, and the rollouts that carry a learning signal."""
        G = self.cfg.rollout.group_size
        adv = group_advantages(rewards, G)
        keep = torch.isfinite(rewards)
        if self.cfg.algo.skip_uniform_groups:
            keep &= (adv.view(-1, G) != 0).any(-1, keepdim=True).expand(-1, G).reshape(-1)
        idx = keep.nonzero().flatten().tolist()
        return [rollouts[i] for i in idx], adv[idx]

    def train_step(self, step: int) -> dict[str, float]:
        t0 = time.monotonic()
        prepared, rollouts = self.generate(step)
        t1 = time.monotonic()
        batch, rewards = self.score(prepared, rollouts, step)
        t2 = time.monotonic()
        chosen, adv = self.select(rollouts, rewards)
        a = self.cfg.algo
        upd = gspo_update(self.model, self.optimizer, self.scheduler, self.loss_fn, chosen, adv,
                          self.tok.pad_token_id, a.num_minibatches, self.cfg.optim.max_grad_norm,
                          {"eps_low": a.eps_low, "eps_high": a.eps_high}, a.old_logprobs, self.torch_gen)
        t3 = time.monotonic()
        self._guard(upd, step)
        self.generator.update_weights(self.model.state_dict(), step + 1)
        t4 = time.monotonic()
        finite = rewards[torch.isfinite(rewards)]
        metrics = {"reward/mean": float(finite.mean()) if finite.numel() else float("nan"),
                   "rl/trained_samples": float(len(chosen)), "rl/steps_applied": float(upd.applied),
                   "rl/response_len": sum(len(r.token_ids) for r in rollouts) / len(rollouts),
                   "rl/lr": self.scheduler.get_last_lr()[0], "weight_version": float(step + 1),
                   "time/generate": t1 - t0, "time/score": t2 - t1, "time/update": t3 - t2, "time/sync": t4 - t3,
                   **batch.metrics, **upd.metrics, **self.hints.metrics()}
        return metrics

    def _guard(self, upd: Any, step: int) -> None:
        if upd.skipped and not upd.applied:
            self.bad_steps += 1
            log.warning("step %d skipped: non-finite loss/grad for samples %s", step, upd.bad_sample_ids[:16])
            self.run.log(step, {"rl/bad_step": 1.0, "rl/bad_sample_ids": upd.bad_sample_ids[:64]})
            if self.bad_steps >= self.cfg.algo.max_bad_steps:
                raise TrainingAborted(f"{self.bad_steps} steps in a row had non-finite loss or gradients "
                                      f"(last samples {upd.bad_sample_ids[:8]}); lower optim.lr or check rewards")
        else:
            self.bad_steps = 0

    # ------------------------------------------------------------------ loop

    def evaluate(self) -> dict[str, float]:
        hard = self.hints.hard_rows(self.cfg.hints.eval_hard_rows) if self.cfg.hints.enabled else []
        if not self.eval_rows and not self.extra_evals and not hard:
            return {}
        max_new = self.cfg.eval.max_new_tokens or self.cfg.rollout.max_new_tokens
        metrics = {}
        if self.eval_rows:
            metrics = greedy_eval(self.generator, self.tok, self.eval_rows, self.eval_scorer, max_new, self.step)
        for name, rows, scorer in self.extra_evals:
            m = greedy_eval(self.generator, self.tok, rows, scorer, max_new, self.step)
            metrics[f"eval/{name}"] = m.pop("eval/accuracy")
            metrics.update({f"eval/{name}/{k.removeprefix('eval/')}": v for k, v in m.items()})
        if hard:  # the training prompts that needed hints, asked without them
            correct: dict[str, float] = {}
            greedy_eval(self.generator, self.tok, hard, self.scorer, max_new, self.step, per_row=correct)
            threshold = self.cfg.hints.correct_threshold
            metrics.update(self.hints.eval_metrics({i: float(v >= threshold) for i, v in correct.items()}))
        for hook in self.eval_hooks:
            metrics.update(hook(self.step, metrics) or {})
        self.run.log(self.step, metrics)
        return metrics

    def fit(self) -> dict[str, Any]:
        from posttrain.progress import StepProgress

        cfg, self.t_start = self.cfg, time.monotonic()
        self.stop.install()
        first = self.evaluate() if self.step == 0 or self.run.read_metrics() == [] else {}
        before = first.get("eval/accuracy", self._first_accuracy())
        last_eval = first
        with StepProgress(cfg.train.steps, self.step) as bar:
            while self.step < cfg.train.steps and not self.stop.requested:
                metrics = self.train_step(self.step)
                self.step += 1
                self.run.log(self.step, metrics)
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.train.steps:
                    last_eval = self.evaluate()
                if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0:
                    self.checkpoint()
                bar.update(self.step, metrics.get("reward/mean"), last_eval.get("eval/accuracy"))
        self.stop.restore()
        interrupted = self.step < cfg.train.steps
        if not interrupted:
            last_eval = self.evaluate()
        self.checkpoint()
        wall = self.wall_offset + time.monotonic() - self.t_start
        save_hf(self.model, self.tok, self.run.final)
        summary = {"accuracy_before_rl": before, "accuracy_after_rl": last_eval.get("eval/accuracy"),
                   "rl_wall_s": round(wall, 2), "steps": self.step, "interrupted": interrupted,
                   "final_model": str(self.run.final), "start_model": cfg.model.path,
                   "eval_data": cfg.data.eval, "hints_hard_ids": len(self.hints.hard_ids())}
        self.run.write_summary(summary)
        if cfg.hints.enabled:
            self.hints.save(self.run.path)
        return summary

    def _first_accuracy(self) -> float | None:
        for rec in self.run.read_metrics():
            if "eval/accuracy" in rec:
                return rec["eval/accuracy"]
        return None

    def close(self) -> None:
        for closer in (getattr(self, "generator", None), getattr(self, "scorer", None),
                       getattr(self, "eval_scorer", None), *(s for _, _, s in getattr(self, "extra_evals", []))):
            if closer is not None:
                try:
                    closer.close()
                except Exception as e:  # cleanup must not hide the real error
                    log.warning("close failed: %s", e)
