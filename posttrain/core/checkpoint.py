"""Atomic checkpoints: written to a temp folder, renamed into place, then `latest`
is pointed at them; a kill at any moment leaves `latest` naming a complete one.

Layout: checkpoints/step-000010/{model/ (HF folder), trainer.pt}, checkpoints/latest; with
trainer workers (trainer.strategy ddp/fsdp) `shards/` (torch.distributed.checkpoint, one file
per worker) replaces `model/`.
A step saved again (the end of a run whose step count is a multiple of
`checkpoint_every`, a stop right after a save, a resumed finished run) goes to a new
folder, `step-000010.1`, and the folder `latest` named is deleted only after `latest`
names the new one: a folder is never removed or replaced while `latest` may name it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import torch

from posttrain.core.models import save_hf
from posttrain.core.run_dir import atomic_write_text
from posttrain.core.seeding import rng_state

POINTER = "latest"
WEIGHT_DIRS = ("model", "shards")  # an HF folder (single process) or DCP shards (trainer workers)


def _order(path: Path) -> tuple[int, int]:
    """(step, save number) of `step-000010` / `step-000010.2`; numeric, so `.10` sorts after `.9`."""
    step, _, again = path.name.removeprefix("step-").partition(".")
    return int(step), int(again or 0)


def checkpoint_folders(root: str | Path) -> list[Path]:
    """Complete checkpoint folders (only renames create `step-*`), oldest first."""
    return sorted((p for p in Path(root).glob("step-*") if p.is_dir()), key=_order)


def save_checkpoint(root: str | Path, step: int, model: Any, tokenizer: Any, state: dict[str, Any],
                    keep: int = 2) -> Path:
    return write_checkpoint(root, step, lambda tmp: save_hf(model, tokenizer, tmp / "model"), state, keep)


def write_checkpoint(root: str | Path, step: int, write_model: Callable[[Path], Any], state: dict[str, Any],
                     keep: int = 2) -> Path:
    """`write_model(tmp)` writes the weights into the temp folder (an HF `model/`, or the `shards/`
    each trainer worker writes: the folder must then be on storage every worker sees)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):  # a save killed half-way; never named by `latest`
        shutil.rmtree(stale, ignore_errors=True)
    tmp = root / f".tmp-step-{step:06d}"
    tmp.mkdir()
    write_model(tmp)
    torch.save({**state, "step": step, "rng": rng_state()}, tmp / "trainer.pt")
    again = 1 + max((_order(p)[1] for p in checkpoint_folders(root) if _order(p)[0] == step), default=-1)
    final = root / (f"step-{step:06d}.{again}" if again else f"step-{step:06d}")
    tmp.rename(final)
    atomic_write_text(root / POINTER, final.name + "\n")
    folders = [p for p in checkpoint_folders(root) if p != final]
    superseded = [p for p in folders if _order(p)[0] == step]  # earlier saves of this step
    older = [p for p in folders if _order(p)[0] != step]
    for old in superseded + (older[:max(0, len(older) - (keep - 1))] if keep > 0 else []):
        doomed = root / f".tmp-{old.name}"  # out of `step-*` first: a kill mid-delete leaves no partial step
        old.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    root = Path(root)
    pointer = root / POINTER
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "trainer.pt").is_file() or not any((path / d).is_dir() for d in WEIGHT_DIRS):
        raise FileNotFoundError(f"{pointer} names {path.name}, which is incomplete; the run directory "
                                "was modified outside posttrain")
    return path


def load_trainer_state(ckpt: str | Path) -> dict[str, Any]:
    return torch.load(Path(ckpt) / "trainer.pt", map_location="cpu", weights_only=False)
