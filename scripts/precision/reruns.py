"""Rerun determinism, many times: the 3-step GSPO run of tests/posttrain/rl/test_determinism.py
(HF generator, the test's tiny model and task) N times in one process, each compared with the
first (every non-volatile metric at every step, every final weight); the runs stay on disk.

    python scripts/precision/reruns.py OUT N [dtype=bfloat16] [extra overrides...]

Prints one line per run: identical, or the first step and metrics that differ.
"""
import json
import sys
from pathlib import Path

import torch

from posttrain.core.config import load_config
from posttrain.rl import trainer as rl
from tests.posttrain.rl.test_determinism import _stable, _volatile, _weights  # noqa: F401 (one definition)
from tests.posttrain.rl.test_trainer import _overrides


def setup(out: Path) -> tuple[Path, tuple[Path, Path]]:
    from posttrain.core.data import write_jsonl
    from posttrain.tasks.addition import make_addition_rows, split_rows
    from posttrain.tasks.tiny import make_tiny_model

    task = out / "task"
    if not (out / "model" / "tiny").is_dir():
        task.mkdir(parents=True, exist_ok=True)
        train, held = split_rows(make_addition_rows(300, digits=2, terms=2, seed=0), 60)
        write_jsonl(task / "train.jsonl", train)
        write_jsonl(task / "eval.jsonl", held)
        make_tiny_model(task / "train.jsonl", out / "model" / "tiny", hidden=64, layers=2, heads=1, head_dim=64,
                        seed=0)
    return out / "model" / "tiny", (task / "train.jsonl", task / "eval.jsonl")


def first_difference(a: Path, b: Path) -> str | None:
    for x, y in zip(_stable(a), _stable(b), strict=True):
        diff = {k: (x.get(k), y.get(k)) for k in set(x) | set(y) if x.get(k) != y.get(k)}
        if diff:
            return f"step {x.get('step')}: {json.dumps(diff, default=str)[:1500]}"
    wa, wb = (_weights(json.loads((d / "summary.json").read_text())) for d in (a, b))
    bad = [k for k in wa if not torch.equal(wa[k], wb[k])]
    return f"weights differ in {bad}" if bad else None


if __name__ == "__main__":
    out, n = Path(sys.argv[1]), int(sys.argv[2])
    dtype = sys.argv[3] if len(sys.argv) > 3 else "bfloat16"
    model, task = setup(out)
    ov = [*_overrides(model, task, steps=3), f"model.dtype={dtype}", f"engine.dtype={dtype}", *sys.argv[4:]]
    start = len([d for d in out.glob("run-*")])
    for i in range(start, start + n):
        rl.run(load_config(rl.Config, None, ov), out / f"run-{i:02d}")
        if i:
            print(f"run {i} vs run 0: {first_difference(out / 'run-00', out / f'run-{i:02d}') or 'identical'}",
                  flush=True)
