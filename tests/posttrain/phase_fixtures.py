"""Data and overrides shared by the phase tests (sft, mpo, rm, rft, configs)."""

from __future__ import annotations

import random
from pathlib import Path

from posttrain.core.data import write_jsonl
from posttrain.tasks.addition import make_addition_rows, split_rows

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "configs" / "tiny"
# A very small model keeps each phase test to seconds.
SMALL_MODEL = ["model.init=tiny", "model.tiny_hidden=64", "model.tiny_layers=1", "model.tiny_heads=1"]


def task_files(d: Path, n: int = 240, n_eval: int = 40) -> tuple[Path, Path]:
    train, held = split_rows(make_addition_rows(n + n_eval, seed=3), n_eval, 0)
    write_jsonl(d / "train.jsonl", train)
    write_jsonl(d / "eval.jsonl", held)
    return d / "train.jsonl", d / "eval.jsonl"


def easy_pairs(d: Path, n: int = 160, n_eval: int = 40) -> tuple[Path, Path]:
    """Pairs whose rejected side is a fixed, easily learned wrong style ("x" before a wrong answer).

    The sides differ by one token in length, so the starting margin is small (a much longer
    rejected side starts with a margin so large that DPO's sigmoid is saturated)."""
    rng = random.Random(0)
    rows = make_addition_rows(n + n_eval, seed=4)

    def pair(r):
        return {"id": r["id"], "prompt": r["prompt"], "chosen": r["answer"],
                "rejected": "x" + str(int(r["answer"]) + rng.randint(1, 9))}

    train, held = split_rows(rows, n_eval, 0)
    write_jsonl(d / "pairs_train.jsonl", [pair(r) for r in train])
    write_jsonl(d / "pairs_eval.jsonl", [pair(r) for r in held])
    return d / "pairs_train.jsonl", d / "pairs_eval.jsonl"
