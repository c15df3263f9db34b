"""Where the policy trains: the seam between the GSPO loop and its optimizer state.

`LocalPolicy` is the in-process trainer (`trainer.strategy: single`, today's behaviour and
checkpoint format); `posttrain.rl.workers.WorkerGroup` holds the policy in N Ray actors
(`ddp` / `fsdp`). Both have the same methods, so the loop in posttrain/rl/trainer.py reads the
same either way:

    update(rollouts, advantages, generator, vision) -> UpdateResult
    state_dict()                      the full HF state dict
    sync_to(generator, version)       install the weights in the engines (WorkerGroup streams from rank 0)
    last_lr(), checkpoint_state(), write_checkpoint(folder), load_checkpoint(folder, state)
    save_final(out, tokenizer), close()
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

from posttrain.core.allocator import mmap_large_allocations
from posttrain.core.devices import MIXED_DTYPES, master_dtype
from posttrain.core.models import load_causal_lm, resolve_device, save_hf
from posttrain.rl.config import Config
from posttrain.rl.mixed import WorkingCopy
from posttrain.rl.optim import make_optimizer
from posttrain.rl.update import UpdateResult, gspo_update, update_settings
from posttrain.rl.workers import WorkerGroup
from posttrain.rl.memory import sparse_tied_embedding_grad
from rollouts.types import Rollout


def total_optimizer_steps(cfg: Config) -> int:
    return cfg.train.steps * cfg.algo.num_minibatches


class LocalPolicy:
    """The policy, its optimizer and schedule in this process. Checkpoints hold an HF folder
    (`model/`) plus the optimizer and scheduler states in trainer.pt. In bf16 the forward and
    backward passes run on a bf16 working copy of the fp32 master model (posttrain.rl.mixed),
    which is what the optimizer, checkpoints and weight sync see."""

    def __init__(self, cfg: Config, model_path: str, precision: str, pad_id: int):
        self.start_path = model_path  # the weights the engines start from
        mmap_large_allocations()  # as in the trainer workers: freed tensors leave the resident set
        self.model = load_causal_lm(model_path, master_dtype(precision), cfg.model.trust_remote_code)
        self.model.to(resolve_device(cfg.model.device))
        sparse_tied_embedding_grad(self.model)
        self.config = self.model.config
        self.optimizer, self.scheduler = make_optimizer(self.model, cfg.optim, total_optimizer_steps(cfg))
        self.settings = update_settings(cfg, pad_id, precision)
        dtype = MIXED_DTYPES.get(precision)
        self.working = WorkingCopy(self.model, dtype) if dtype is not None else None
        self.ref_model = None
        if cfg.algo.kl_coef > 0:  # the start model (model.path, also on resume), frozen: the KL penalty's reference
            self.ref_model = load_causal_lm(cfg.model.path, master_dtype(precision), cfg.model.trust_remote_code)
            self.ref_model.to(resolve_device(cfg.model.device)).eval().requires_grad_(False)
            self.settings.update(ref_model=self.ref_model, kl_coef=cfg.algo.kl_coef)

    def update(self, rollouts: list[Rollout], advantages: torch.Tensor, generator: torch.Generator,
               vision: Callable | None = None) -> UpdateResult:
        return gspo_update(self.model, self.optimizer, self.scheduler, rollouts=rollouts, advantages=advantages,
                           generator=generator, vision=vision, working=self.working, **self.settings)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def sync_to(self, generator: Any, version: int) -> None:
        generator.update_weights(self.model.state_dict(), version)

    def last_lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def checkpoint_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def write_checkpoint(self, folder: Path, tokenizer: Any) -> None:
        save_hf(self.model, tokenizer, folder / "model")

    def load_checkpoint(self, folder: Path, state: dict[str, Any]) -> None:
        """The model was loaded from `folder/model` (start_path); the optimizer and schedule come from state."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])

    def save_final(self, out: Path, tokenizer: Any) -> None:
        save_hf(self.model, tokenizer, out)

    def close(self) -> None:
        pass


def make_policy(cfg: Config, ckpt: Path | None, precision: str, pad_id: int) -> Any:
    """`trainer.strategy: single` -> LocalPolicy (from the checkpoint's model/ on resume);
    ddp / fsdp -> a WorkerGroup of trainer.num_workers Ray actors (from model.path; the shards
    of a checkpoint are loaded by `load_checkpoint`)."""
    if not cfg.trainer.distributed:
        return LocalPolicy(cfg, str(ckpt / "model") if ckpt else cfg.model.path, precision, pad_id)
    return WorkerGroup(cfg, cfg.model.path, precision, pad_id)
