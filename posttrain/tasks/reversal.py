"""Offline digit-string tasks: reversal ("Reverse 4821." -> "1284"), shift ("Shift 4821." ->
"5932", every digit plus one mod 10) and copying ("Repeat 4821." -> "4821").

The tasks of the experts demo (configs/recipes/experts.yaml). The tiny models' tokenizer
splits digits one per token, so reversal is a position map that keeps the tokens and shift
a token map that keeps the positions: two skills a 0.9M model learns within tens of SFT
steps from a base that knows them in part, which an expert of one does not keep for the
other. (Addition was the first partner of reversal: it needs hundreds of steps at this size
and its experts did not merge, docs/merge.md. Word reversal was tried before that: BPE
merges letters into chunks, so reversing a word means spelling it, which the tiny model did
not learn in minutes.)

>>> rows = make_reversal_rows(3, seed=0)
>>> all(r["answer"] == r["prompt"].split()[1].rstrip(".")[::-1] for r in rows)
True
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from posttrain.core.data import write_jsonl
from posttrain.tasks.addition import split_rows


KINDS = {  # task -> (the prompt's verb, the answer from the digit string)
    "reversal": ("Reverse", lambda s: s[::-1]),
    "copy": ("Repeat", lambda s: s),
    "shift": ("Shift", lambda s: "".join(str((int(c) + 1) % 10) for c in s)),
}


def make_reversal_rows(n: int, min_digits: int = 3, max_digits: int = 5, seed: int = 0,
                       prefix: str = "rev", copy: bool = False, kind: str | None = None) -> list[dict[str, Any]]:
    """`n` distinct digit strings (no leading zero) to reverse, with answers; `copy=True` (or
    `kind="copy"`): the copy task ("Repeat 4821." -> "4821"); `kind="shift"`: every digit plus one,
    mod 10 ("Shift 4821." -> "5932"), a token map that keeps positions where reversal is a
    position map that keeps tokens."""
    kind = kind or ("copy" if copy else "reversal")
    if kind not in KINDS:
        raise ValueError(f"unknown digit task {kind!r}; use one of {', '.join(KINDS)}")
    verb, answer = KINDS[kind]
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
        rows.append({"id": f"{prefix}-{len(rows):06d}", "prompt": f"{verb} {s}.", "answer": answer(s), "task": kind})
    return rows


def make_experts_data(out: Path, n_train: int, n_eval: int, seed: int) -> tuple[Path, Path]:
    """The experts demo's data: digit reversal, digit shift and digit copying (distinct digit
    strings per task), `n_train` + `n_eval` rows of each, shuffled into OUT/train.jsonl and
    OUT/eval.jsonl; rows carry `task` so a stage can pick one (SFT's data.task)."""
    train, held = [], []
    for i, kind in enumerate(("reversal", "shift", "copy")):
        rows = make_reversal_rows(n_train + n_eval, seed=seed + i, prefix=kind, kind=kind)
        t, h = split_rows(rows, n_eval, seed)
        train, held = train + t, held + h
    random.Random(seed).shuffle(train)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", held)
    return out / "train.jsonl", out / "eval.jsonl"
