"""`posttrain rl`: the GSPO trainer. One step reads

    rows -> hints.plan -> generate -> score -> hints.update -> select -> update -> sync

Hints enter through `plan` and `update` only (hints/sampler.py). Checkpoints are atomic
and hold model, optimizer, scheduler, RNG, data position and hint state, so `--resume`
continues the same prompt order. The config is posttrain/rl/config.py.
"""

from __future__ import annotations

import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from hints.probe import prompt_encoder
from hints.sampler import Draw, HintSampler
from hints.sources import TeacherHints
from posttrain.advantages import group_advantages
from posttrain.core.checkpoint import latest_checkpoint, load_trainer_state, write_checkpoint
from posttrain.core.config import ConfigError
from posttrain.core.data import PromptSampler, check_prompt_lengths, dataset_fingerprint, load_rows
from posttrain.core.devices import resolve_dtype
from posttrain.core.models import is_image_text_model, load_processor, load_tokenizer
from posttrain.core.progress import StepProgress, rss_mb
from posttrain.core.run_dir import FINAL_DIR, HINTS_STATE_FILE, TEACHER_CACHE_FILE, RunDir
from posttrain.core.seeding import set_rng_state, set_seed
from posttrain.core.stop import StopFlag
from posttrain.rl.config import Config
from posttrain.rl.logprobs import vision_inputs
from posttrain.rl.policy import make_policy
from posttrain.rl.shaping import informative_groups, overlong_penalty
from posttrain.rl.update import UpdateResult
from rewards.resolve import uses_services
from rewards.scorer import Scorer
from rollouts.cluster import RayCluster, start_ray as start_cluster
from rollouts.evaluate import encode_rows, greedy_eval
from rollouts.factory import engine_dtype, make_generator
from rollouts.hf import HFGenerator
from rollouts.media import load_media
from rollouts.types import PromptInput, Rollout, SamplingSpec

log = logging.getLogger(__name__)

__all__ = ["Config", "GSPOTrainer", "TrainingAborted", "outputs", "run"]


class TrainingAborted(RuntimeError):
    pass


def run(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    trainer = GSPOTrainer(cfg, Path(run_dir), resume=resume)
    try:
        return trainer.fit()
    finally:
        trainer.close()


def outputs(cfg: Config, stage_dir: Path) -> dict[str, str | None]:
    """What an rl stage leaves for later stages: its model and (with hints) the hint state."""
    return {"model": str(stage_dir / FINAL_DIR),
            "hints": str(stage_dir / HINTS_STATE_FILE) if cfg.hints.enabled else None}


def start_ray(cfg: Config) -> RayCluster | None:
    """Ray with the run's settings, started before any reward service or trainer worker could start it
    with defaults; the pool, the services and the workers join this cluster."""
    needed = (cfg.rollout.backend == "vllm" or cfg.trainer.distributed
              or uses_services(cfg.reward, cfg.eval.reward, *(e.reward for e in cfg.eval.extra_evals)))
    return start_cluster(cfg.ray, needed)


def teacher_hints(cfg: Config, run_dir: Path) -> TeacherHints | None:
    """hints.source=teacher: the teacher model (in-process, greedy) writes each missing
    hint once; hints are cached in hints.cache_path (default RUN_DIR/hint_cache.jsonl)."""
    h = cfg.hints
    if not (h.enabled and h.source == "teacher"):
        return None
    teacher = HFGenerator(h.teacher, device=cfg.model.device)
    return TeacherHints(teacher, prompt_encoder(teacher.tokenizer), h.teacher,
                        h.cache_path or run_dir / TEACHER_CACHE_FILE)


@dataclass(frozen=True)
class _Done:
    """A finished prefetch (the future's interface)."""

    value: Any

    def result(self) -> Any:
        return self.value


def draw_key(draw: Draw) -> str:
    """The generation key of a draw: the row id, or row id + level for a search probe (unique per group)."""
    return f"{draw.id}#h{draw.level}" if draw.search else draw.id


class GSPOTrainer:
    def __init__(self, cfg: Config, run_dir: Path, resume: bool = False):
        self.cfg, self.run = cfg, RunDir(run_dir, cfg.phase)
        if not cfg.data.train:
            raise ConfigError("field 'data.train' is not set: pass data.train=FILE.jsonl")
        if not cfg.model.path:
            raise ConfigError("field 'model.path' is not set: pass model.path=HF_FOLDER (or use `posttrain "
                              "pipeline` with model.init=tiny)")
        self.run.start(cfg, resume)
        set_seed(cfg.train.seed)
        self.rows = load_rows(cfg.data.train)
        self.eval_rows = load_rows(cfg.data.eval)[: cfg.data.max_eval_rows] if cfg.data.eval else []
        self.sampler = PromptSampler(len(self.rows), cfg.data.seed, cfg.data.shuffle, dataset_fingerprint(self.rows))
        self.step, self.bad_steps, self.wall_offset = 0, 0, 0.0
        ckpt = latest_checkpoint(self.run.checkpoints) if resume else None
        if cfg.trainer.distributed and is_image_text_model(cfg.model.path):
            raise ConfigError(f"trainer.strategy={cfg.trainer.strategy} trains text models only for now; "
                              "use trainer.strategy=single for an image-text model")
        # bf16 (given or chosen by `auto`) trains mixed precision: fp32 weights, bf16 autocast compute
        self.precision = resolve_dtype(cfg.model.dtype, cfg.model.device)
        self.engine_precision = engine_dtype(cfg.rollout.backend, cfg.engine, cfg.model.device)
        log.info("trainer computes in %s (%s); engines run %s (%s)", self.precision.dtype, self.precision.reason,
                 self.engine_precision.dtype, self.engine_precision.reason)
        self.tok = load_tokenizer(ckpt / "model" if ckpt and not cfg.trainer.distributed else cfg.model.path,
                                  cfg.model.trust_remote_code)
        self.cluster = start_ray(cfg)  # before any reward service or trainer worker could start Ray otherwise
        # in this process (trainer.strategy=single) or in trainer.num_workers Ray actors (posttrain/rl/policy.py)
        self.policy = make_policy(cfg, ckpt, self.precision.dtype, self.tok.pad_token_id)
        model_path = self.policy.start_path
        self._check_prompt_lengths()
        # image-text models: the processor encodes media prompts, builds pixel inputs, and is saved with the model
        self.processor = (load_processor(model_path, cfg.model.trust_remote_code)
                          if is_image_text_model(model_path) else None)
        self.torch_gen = torch.Generator().manual_seed(cfg.train.seed)
        self.scorer = Scorer.from_config(cfg.reward)
        self.eval_scorer = Scorer.from_config(cfg.eval.reward, max_failed_fraction=1.0)  # an eval never aborts
        self.extra_evals = [(e.name, load_rows(e.data)[: e.max_rows], Scorer.from_config(e.reward, max_failed_fraction=1.0))
                            for e in cfg.eval.extra_evals]
        self.eval_hooks: list[Any] = []  # fn(step, metrics) -> extra metrics (or None), after each eval
        self.teacher = teacher_hints(cfg, self.run.path)
        self.hints = HintSampler(cfg.hints, self.rows, threshold=cfg.reward.threshold, source=self.teacher)
        if ckpt:
            self._load(ckpt)
        self.generator = make_generator(cfg.rollout.backend, model_path, cfg.engine, cfg.ray, cfg.model.device,
                                        seed=cfg.train.seed, unit_timeout_s=cfg.rollout.timeout_s,
                                        sync_timeout_s=cfg.rollout.sync_timeout_s,
                                        max_restarts=cfg.rollout.max_restarts,
                                        trust_remote_code=cfg.model.trust_remote_code,
                                        weight_sync=cfg.rollout.weight_sync, sync_bucket_mb=cfg.rollout.sync_bucket_mb,
                                        sync_backend=cfg.rollout.sync_backend)
        if ckpt:  # engines loaded the start folder; give them the checkpoint's weights and version
            self.policy.sync_to(self.generator, self.step)
        self.stop = StopFlag()
        self.timings: dict[str, float] = {}
        self.version = self.step  # the trainer's weight version (engines hold the same after each sync)
        self._pending: Any = None  # with rollout.max_staleness=1: the next step's (draws, rollouts)
        self._prefetch = ThreadPoolExecutor(1, thread_name_prefix="rollout") if cfg.rollout.max_staleness else None

    # ------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        return {**self.policy.checkpoint_state(),
                "sampler": self.sampler.state_dict(), "hints": self.hints.state_dict(),
                "torch_gen": self.torch_gen.get_state(), "bad_steps": self.bad_steps,
                "wall_s": self.wall_offset + (time.monotonic() - self.t_start)}

    def _load(self, ckpt: Path) -> None:
        state = load_trainer_state(ckpt)
        self.policy.load_checkpoint(ckpt, state)
        self.sampler.load_state_dict(state["sampler"])
        self.hints.load_state_dict(state["hints"])
        self.torch_gen.set_state(state["torch_gen"])
        self.bad_steps, self.step = state["bad_steps"], state["step"]
        self.wall_offset = state.get("wall_s", 0.0)
        set_rng_state(state["rng"])
        log.info("resumed from %s at step %d", ckpt, self.step)

    def _check_prompt_lengths(self) -> None:
        """Every prompt must leave room for its response in the engine's and the model's context."""
        cfg = self.cfg
        ctx = getattr(self.policy.config, "max_position_embeddings", None) or 1 << 30
        if cfg.rollout.backend == "vllm":
            ctx = min(ctx, cfg.engine.max_model_len)
        for path, rows, new in ((cfg.data.train, self.rows, cfg.rollout.max_new_tokens),
                                (cfg.data.eval, self.eval_rows, cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens)):
            if rows:
                check_prompt_lengths(path, rows, self.tok, ctx - new, f"that a context of {ctx} (engine.max_model_len,"
                                     f" the model's max_position_embeddings) leaves beside {new} new tokens")

    def checkpoint(self) -> Path:
        tokenizer = self.processor or self.tok
        return write_checkpoint(self.run.checkpoints, self.step, lambda tmp: self.policy.write_checkpoint(tmp, tokenizer),
                                self._state(), self.cfg.train.keep_checkpoints)

    # ------------------------------------------------------------------ the step

    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.timings[f"time/{stage}"] = time.monotonic() - t0

    def train_step(self, step: int) -> dict[str, float]:
        self.timings = {}
        with self.timed("generate"):
            draws, rollouts = self._pending.result() if self._pending else self.draw_and_generate(step)
            self._pending = None
        with self.timed("score"):
            batch, rewards = self.score(draws, rollouts)
        hint_metrics = self.hints.update(list(zip(draws, self.groups(batch.rewards))))
        draws, rollouts, rewards, ds_metrics = self.dynamic_sampling(step, draws, rollouts, rewards)
        chosen, adv, select_metrics = self.select(draws, rollouts, rewards)
        if self.cfg.rollout.max_staleness and step + 1 < self.cfg.train.steps:  # generate k+1 while k updates
            self._pending = self._prefetch.submit(self.draw_and_generate, step + 1, self.draw(step + 1))
        with self.timed("update"):
            upd = self.update(chosen, adv, step)
        with self.timed("sync"):
            restarted = self.sync(step + 1)
        finite = rewards[torch.isfinite(rewards)]
        return {"reward/mean": float(finite.mean()) if finite.numel() else float("nan"),
                "rl/trained_samples": float(len(chosen)), "rl/steps_applied": float(upd.applied),
                "rl/response_len": sum(len(r.token_ids) for r in rollouts) / len(rollouts),
                "rl/lr": self.policy.last_lr(), "weight_version": float(step + 1),
                "rollout/staleness_max": float(max((step - r.weight_version for r in chosen), default=0)),
                "rollout/restarted": float(restarted),
                **self.timings, **batch.metrics, **ds_metrics, **select_metrics, **upd.metrics, **hint_metrics}

    def draw(self, step: int) -> list[Draw]:
        rows = [self.rows[i] for i in self.sampler.next_batch(self.cfg.rollout.prompts_per_step)]
        return self.hints.plan(rows, step)

    def draw_and_generate(self, step: int, draws: list[Draw] | None = None) -> tuple[list[Draw], list[Rollout]]:
        draws = self.draw(step) if draws is None else draws
        return draws, self.generate(draws, step)

    def dynamic_sampling(self, step: int, draws: list[Draw], rollouts: list[Rollout], rewards: torch.Tensor
                         ) -> tuple[list[Draw], list[Rollout], torch.Tensor, dict]:
        """DAPO: while fewer than the wanted groups are informative, draw and sample another batch of
        prompts (at most `max_rounds` more); the groups beyond the wanted number are dropped in select."""
        ds, G = self.cfg.dynamic_sampling, self.cfg.rollout.group_size
        rounds = 0
        if ds.enabled:
            want = ds.min_informative_groups or self.cfg.rollout.prompts_per_step
            while rounds < ds.max_rounds and int(informative_groups(rewards, G).sum()) < want:
                rounds += 1
                t0 = time.monotonic()
                more, extra = self.draw_and_generate(step)
                batch, more_rewards = self.score(more, extra)
                self.timings["time/generate"] += time.monotonic() - t0  # extra rounds count as generation
                self.hints.update(list(zip(more, self.groups(batch.rewards))))  # the step logs round 0's metrics
                draws, rollouts, rewards = draws + more, rollouts + extra, torch.cat([rewards, more_rewards])
        return draws, rollouts, rewards, {"rl/ds_rounds": float(rounds), "rl/groups_sampled": float(len(draws))}

    def groups(self, values: list[Any]) -> list[list[Any]]:
        G = self.cfg.rollout.group_size
        return [values[k * G:(k + 1) * G] for k in range(len(values) // G)]

    def generate(self, draws: list[Draw], step: int) -> list[Rollout]:
        """G samples per draw from its prompt; each rollout trains on its draw's `train_row` prompt."""
        r = self.cfg.rollout
        spec = SamplingSpec(n=r.group_size, temperature=r.temperature, top_p=r.top_p,
                            max_tokens=r.max_new_tokens, seed=self.cfg.train.seed)
        encoded = encode_rows(self.tok, [d.prompt_row for d in draws], self.processor, r.video_token_budget)
        prompts = [PromptInput(draw_key(d), e.token_ids, e.media) for d, e in zip(draws, encoded)]
        rollouts = self.generator.generate(prompts, spec, step)
        if self.processor is not None:
            if any(d.train_row is not d.prompt_row for d in draws):
                raise ValueError("hints.train_prompt=plain is not supported for image-text models yet")
            media = {p.prompt_id: p.media for p in prompts}
            for ro in rollouts:
                ro.meta["media"] = media[ro.prompt_id]
        retrain = [k for k, d in enumerate(draws) if d.train_row is not d.prompt_row]
        bare = encode_rows(self.tok, [draws[k].train_row for k in retrain])
        for k, enc in zip(retrain, bare):  # hints.train_prompt=plain: train on the bare question
            for ro in rollouts[k * r.group_size:(k + 1) * r.group_size]:
                ro.prompt_token_ids = enc.token_ids
        for d, group in zip(draws, self.groups(rollouts)):
            for ro in group:
                ro.meta["hint_level"] = d.level
        return rollouts

    def score(self, draws: list[Draw], rollouts: list[Rollout]) -> tuple[Any, torch.Tensor]:
        samples = [d.row for d in draws for _ in range(self.cfg.rollout.group_size)]
        batch = self.scorer.score([r.text for r in rollouts], samples)
        rewards = torch.tensor([math.nan if v is None else v for v in batch.rewards], dtype=torch.float64)
        return batch, rewards

    def select(self, draws: list[Draw], rollouts: list[Rollout], rewards: torch.Tensor
               ) -> tuple[list[Rollout], torch.Tensor, dict[str, float]]:
        """Advantages, and the rollouts that carry a learning signal (overlong handling, uniform
        groups, dynamic sampling's surplus and samples staler than rollout.max_staleness left out)."""
        G, ol = self.cfg.rollout.group_size, self.cfg.overlong
        truncated = torch.tensor([r.finish_reason == "length" for r in rollouts])
        if ol.mode == "soft_penalty":
            lengths = torch.tensor([len(r.token_ids) for r in rollouts])
            rewards = rewards + overlong_penalty(lengths, truncated, self.cfg.rollout.max_new_tokens, ol.buffer,
                                                 ol.penalty)
        adv = group_advantages(rewards, G)
        keep = torch.isfinite(rewards)
        if ol.mode == "mask":
            keep &= ~truncated
        if self.cfg.algo.skip_uniform_groups or self.cfg.dynamic_sampling.enabled:
            keep &= informative_groups(rewards, G).repeat_interleave(G)
        if self.cfg.dynamic_sampling.enabled:  # the wanted number of informative groups, first drawn first
            want = self.cfg.dynamic_sampling.min_informative_groups or self.cfg.rollout.prompts_per_step
            kept = keep.view(-1, G).any(-1)
            keep &= (kept & (kept.cumsum(0) <= want)).repeat_interleave(G)
        stale = torch.tensor([self.version - r.weight_version > self.cfg.rollout.max_staleness for r in rollouts])
        keep &= ~stale
        kept_groups = keep.view(-1, G).any(-1).tolist()
        idx = keep.nonzero().flatten().tolist()
        metrics = {"rl/groups_kept": float(sum(kept_groups)), "rl/groups_dropped": float(len(kept_groups) - sum(kept_groups)),
                   "rl/truncated_frac": float(truncated.float().mean()) if len(rollouts) else 0.0,
                   "rollout/dropped_stale": float(stale.sum())}
        if any(d.search for d in draws):
            metrics["hints/search/groups_trained"] = float(sum(k for d, k in zip(draws, kept_groups) if d.search))
        return [rollouts[i] for i in idx], adv[idx], metrics

    def update(self, chosen: list[Rollout], adv: torch.Tensor, step: int) -> UpdateResult:
        upd = self.policy.update(chosen, adv, self.torch_gen, self._vision if self.processor is not None else None)
        self._guard(upd, step)
        return upd

    def _vision(self, rollouts: list[Rollout]) -> dict[str, torch.Tensor]:
        """Pixel inputs of the rollouts' prompts, in rollout order (image tokens stay in the prompt)."""
        return vision_inputs(self.processor.image_processor, [load_media(r.meta["media"]) for r in rollouts])

    def sync(self, version: int) -> int:
        """Install the new weights in the engines once the generation in flight (if any) is done.
        With rollout.partial_rollouts=restart, that generation is redone with the new weights;
        returns how many rollouts were restarted."""
        restarted = 0
        if self._pending is not None:
            t0 = time.monotonic()
            draws, rollouts = self._pending.result()
            self.timings["time/rollout_wait"] = time.monotonic() - t0  # generation that the update did not hide
            self.policy.sync_to(self.generator, version)
            if self.cfg.rollout.partial_rollouts == "restart":
                restarted, rollouts = len(rollouts), self.generate(draws, version)
            self._pending = _Done((draws, rollouts))
        else:
            self.policy.sync_to(self.generator, version)
        self.timings.update(getattr(self.generator, "last_sync", {}))  # sync/seconds, sync/bytes, sync/streamed
        self.version = version
        return restarted

    def _guard(self, upd: UpdateResult, step: int) -> None:
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
        hard = self.hints.eval_rows()
        if not self.eval_rows and not self.extra_evals and not hard:
            return {}
        max_new = self.cfg.eval.max_new_tokens or self.cfg.rollout.max_new_tokens
        metrics: dict[str, float] = {}
        if self.eval_rows:
            metrics = self._greedy(self.eval_rows, self.eval_scorer, max_new).metrics
        for name, rows, scorer in self.extra_evals:
            m = self._greedy(rows, scorer, max_new).metrics
            metrics[f"eval/{name}"] = m.pop("eval/accuracy")
            metrics.update({f"eval/{name}/{k.removeprefix('eval/')}": v for k, v in m.items()})
        if hard:  # the training prompts that needed hints, asked without them
            res = self._greedy(hard, self.scorer, max_new)
            metrics.update(self.hints.eval_metrics(res.rewards))
        for hook in self.eval_hooks:
            metrics.update(hook(self.step, metrics) or {})
        self.run.log(self.step, metrics)
        return metrics

    def _greedy(self, rows: list[dict[str, Any]], scorer: Any, max_new: int) -> Any:
        return greedy_eval(self.generator, self.tok, rows, scorer, max_new, self.step, processor=self.processor,
                           video_budget=self.cfg.rollout.video_token_budget)

    def fit(self) -> dict[str, Any]:
        cfg, self.t_start = self.cfg, time.monotonic()
        self.stop.install()
        first = self.evaluate() if self.step == 0 or self.run.read_metrics() == [] else {}
        before = first.get("eval/accuracy", self._first_accuracy())
        last_eval = first
        with StepProgress(cfg.train.steps, self.step) as bar:
            while self.step < cfg.train.steps and not self.stop.requested:
                metrics = self.train_step(self.step)
                metrics["mem/rss_mb"] = rss_mb()
                self.step += 1
                self.run.log(self.step, metrics)
                if cfg.eval.every and self.step % cfg.eval.every == 0 and self.step < cfg.train.steps:
                    last_eval = self.evaluate()
                if cfg.train.checkpoint_every and self.step % cfg.train.checkpoint_every == 0:
                    self.checkpoint()
                bar.update(self.step, metrics.get("reward/mean"), last_eval.get("eval/accuracy"))
        self.stop.restore()
        interrupted, preempted = self.step < cfg.train.steps, self.stop.preempted
        if not interrupted:
            last_eval = self.evaluate()
        self.checkpoint()
        wall = self.wall_offset + time.monotonic() - self.t_start
        if not preempted:  # a preempted run leaves its checkpoint, never a final/ that looks finished
            self.policy.save_final(self.run.final, self.processor or self.tok)
        summary = {"accuracy_before_rl": before, "accuracy_after_rl": last_eval.get("eval/accuracy"),
                   "rl_wall_s": round(wall, 2), "steps": self.step, "interrupted": interrupted,
                   "preempted": preempted, "final_model": None if preempted else str(self.run.final),
                   "start_model": cfg.model.path,
                   "eval_data": cfg.data.eval, "hints_hard_ids": len(self.hints.hard_ids()),
                   **self.precision.as_metrics("trainer"), **self.engine_precision.as_metrics("engine")}
        self.run.write_summary(summary)
        if cfg.hints.enabled:
            self.hints.save(self.run.path)
        return summary

    def _first_accuracy(self) -> float | None:
        for rec in self.run.read_metrics():
            if "eval/accuracy" in rec:
                return rec["eval/accuracy"]
        return None

    @property
    def model(self) -> Any:
        """The in-process policy model (trainer.strategy=single; benchmarks and tests read it)."""
        return self.policy.model

    @property
    def optimizer(self) -> Any:
        return self.policy.optimizer

    def close(self) -> None:
        if getattr(self, "_prefetch", None) is not None:
            self._prefetch.shutdown(wait=True, cancel_futures=True)
        for closer in (getattr(self, "policy", None), getattr(self, "generator", None), getattr(getattr(self, "teacher", None), "generator", None),
                       getattr(self, "scorer", None),
                       getattr(self, "eval_scorer", None), *(s for _, _, s in getattr(self, "extra_evals", []))):
            if closer is not None:
                try:
                    closer.close()
                except Exception as e:  # cleanup must not hide the real error
                    log.warning("close failed: %s", e)
        if getattr(self, "cluster", None) is not None:
            self.cluster.close()
