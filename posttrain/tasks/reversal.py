"""Offline task: reverse the digits of a number ("Reverse 4821." -> "1284").

The second task of the experts demo (configs/recipes/experts.yaml). The tiny models'
tokenizer splits digits one per token, so reversal is a copy task the model learns in a
few hundred SFT steps, while addition needs carries: two skills an expert of one does
not have for the other. (Word reversal was tried first: BPE merges letters into chunks,
so reversing a word means spelling it, which the tiny model did not learn in minutes.)

>>> rows = make_reversal_rows(3, seed=0)
>>> all(r["answer"] == r["prompt"].split()[1].rstrip(".")[::-1] for r in rows)
True
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from posttrain.core.data import write_jsonl
from posttrain.tasks.addition import make_addition_rows, split_rows


def make_reversal_rows(n: int, min_digits: int = 3, max_digits: int = 5, seed: int = 0,
                       prefix: str = "rev", copy: bool = False) -> list[dict[str, Any]]:
    """`n` distinct digit strings (no leading zero) to reverse, with answers; `copy=True`: the
    copy task instead ("Repeat 4821." -> "4821", task "copy": the experts demo's base learns the
    chat format and the digits on it, and neither expert's skill)."""
    if not 1 <= min_digits <= max_digits:
        raise ValueError(f"need 1 <= min_digits <= max_digits (got {min_digits}, {max_digits})")
    space = sum(9 * 10 ** (d - 1) for d in range(min_digits, max_digits + 1))
    if n > space:
        raise ValueError(f"only {space} distinct numbers with {min_digits}-{max_digits} digits; asked for {n}")
    rng = random.Random(f"{prefix}:{min_digits}:{max_digits}:{seed}")
    rows, seen = [], set()
    while len(rows) < n:
        d = rng.randint(min_digits, max_digits)
        s = str(rng.randint(10 ** (d - 1), 10 ** d - 1))
        if s in seen:
            continue
        seen.add(s)
        rows.append({"id": f"{prefix}-{len(rows):06d}", "prompt": f"{'Repeat' if copy else 'Reverse'} {s}.",
                     "answer": s if copy else s[::-1], "task": "copy" if copy else "reversal"})
    return rows


def make_experts_data(out: Path, n_train: int, n_eval: int, seed: int) -> tuple[Path, Path]:
    """The experts demo's data: 2-digit addition (no hints), digit reversal and digit copying,
    `n_train` + `n_eval` rows of each, shuffled into OUT/train.jsonl and OUT/eval.jsonl; rows carry
    `task` so a stage can pick one (SFT's data.task)."""
    add_train, add_eval = split_rows(make_addition_rows(n_train + n_eval, digits=2, terms=2, seed=seed), n_eval, seed)
    rev_train, rev_eval = split_rows(make_reversal_rows(n_train + n_eval, seed=seed), n_eval, seed)
    copy_train, copy_eval = split_rows(make_reversal_rows(n_train + n_eval, seed=seed + 1, prefix="copy", copy=True),
                                       n_eval, seed)
    for r in add_train + add_eval:
        r.pop("hints", None)
    train = add_train + rev_train + copy_train
    random.Random(seed).shuffle(train)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", add_eval + rev_eval + copy_eval)
    return out / "train.jsonl", out / "eval.jsonl"
