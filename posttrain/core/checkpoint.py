"""Atomic checkpoints: written to a temp folder, renamed into place, then `latest`
is pointed at them; a kill at any moment leaves `latest` naming a complete one.

Layout: checkpoints/step-000010/{model/ (HF folder), trainer.pt}, checkpoints/latest.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch

from posttrain.core.models import save_hf
from posttrain.core.run_dir import atomic_write_text
from posttrain.core.seeding import rng_state


def save_checkpoint(root: str | Path, step: int, model: Any, tokenizer: Any, state: dict[str, Any],
                    keep: int = 2) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step-{step:06d}"
    tmp = root / f".tmp-step-{step:06d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_hf(model, tokenizer, tmp / "model")
    torch.save({**state, "step": step, "rng": rng_state()}, tmp / "trainer.pt")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    atomic_write_text(root / "latest", final.name + "\n")
    for old in sorted(root.glob("step-*"))[:-keep] if keep > 0 else []:
        if old != final:
            shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(root: str | Path) -> Path | None:
    root = Path(root)
    pointer = root / "latest"
    if not pointer.is_file():
        return None
    path = root / pointer.read_text().strip()
    if not (path / "trainer.pt").is_file() or not (path / "model").is_dir():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is incomplete; the run directory "
                                "was modified outside posttrain")
    return path


def load_trainer_state(ckpt: str | Path) -> dict[str, Any]:
    return torch.load(Path(ckpt) / "trainer.pt", map_location="cpu", weights_only=False)
