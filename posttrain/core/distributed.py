"""Several processes of one command (`torchrun --nproc_per_node N posttrain sft ...`): who writes.

torchrun sets RANK and WORLD_SIZE; every process trains (TRL / accelerate wrap the model in
DDP), only rank 0 writes the run directory (config, metrics, summary, final/), and the others
wait at a barrier where they would read what rank 0 wrote (the tiny start model). A single
process (no WORLD_SIZE) never touches torch.distributed. docs/scale.md.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta
from typing import Iterator

import torch
import torch.distributed as dist

# the group's bound on a collective; TrainingArguments' ddp_timeout defaults to the same 30 min
TIMEOUT_S = float(os.environ.get("POSTTRAIN_DIST_TIMEOUT_S", "1800"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    """Rank 0 of a multi-process run, or a single process: the one that writes."""
    return rank() == 0


def ensure_group() -> bool:
    """Join the process group torchrun describes (gloo on CPU, nccl with CUDA) if not joined yet;
    accelerate then uses this group. False for a single process."""
    if world_size() <= 1:
        return False
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=TIMEOUT_S))
    return True


def barrier() -> None:
    if ensure_group():
        dist.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block, then the others do (after a barrier): for work whose output the
    other ranks reuse instead of redoing it (building the start model, claiming the run dir)."""
    if not is_main():
        barrier()
    yield
    if is_main():
        barrier()
