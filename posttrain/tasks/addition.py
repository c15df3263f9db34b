"""Offline verifiable tasks: multi-term addition with five hint levels per row.

Difficulty knobs: `digits` (max digits per term) and `terms` (number of terms).
Hints follow Keye-VL 1.5's levels: 1 concept, 2 strategy, 3 tools/formula,
4 steps/calculation, 5 complete solution.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from posttrain.core.data import write_jsonl


def _column_steps(terms: list[int]) -> list[str]:
    """Ones-first column additions with carries, e.g. ['ones 3+5=8 carry 0', ...]."""
    width = max(len(str(t)) for t in terms)
    names = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands"]
    steps, carry = [], 0
    for col in range(width):
        digits = [(t // 10**col) % 10 for t in terms]
        total = sum(digits) + carry
        expr = "+".join(str(d) for d in digits) + (f"+{carry}" if carry else "")
        name = names[col] if col < len(names) else f"10^{col}"
        steps.append(f"{name} {expr}={total} write {total % 10} carry {total // 10}")
        carry = total // 10
    if carry:
        steps.append(f"final carry {carry}")
    return steps


def addition_hints(terms: list[int]) -> list[str]:
    """Five row-specific, cumulative hints: level k repeats level k-1 and adds one piece
    (1 whether the ones column carries, in words; 2 the ones column and so the last digit;
    3 the other columns; 4 the number of digits; 5 the answer), so a higher level never
    tells the model less, and every number in a hint is true (an estimate such as "near 90"
    for 85 put wrong digits in front of a model that copies what it sees: docs/hints.md)."""
    total = sum(terms)
    steps = _column_steps(terms)
    ones = [t % 10 for t in terms]
    pieces = [
        "the ones column carries" if sum(ones) >= 10 else "the ones column does not carry",
        f"ones {'+'.join(map(str, ones))}={sum(ones)}, so it ends in {total % 10}",
        "; ".join(s.split(" write ")[0] for s in steps[1:]) or "no other columns",
        f"the sum has {len(str(total))} digits",
        f"{' + '.join(map(str, terms))} = {total}. The answer is {total}",
    ]
    return ["Hint: " + "; ".join(pieces[:k]) + "." for k in range(1, 6)]


def make_addition_rows(
    n: int, digits: int = 2, terms: int = 2, seed: int = 0, prefix: str = "add",
    min_value: int = 0,
) -> list[dict[str, Any]]:
    """`n` distinct addition problems with answers and five hint levels."""
    rng = random.Random(f"{prefix}:{digits}:{terms}:{seed}")
    hi = 10**digits - 1
    space = (hi - min_value + 1) ** terms
    if n > space:
        raise ValueError(f"only {space} distinct problems with digits={digits}, terms={terms}; asked for {n}")
    rows, seen = [], set()
    while len(rows) < n:
        nums = tuple(rng.randint(min_value, hi) for _ in range(terms))
        if nums in seen:
            continue
        seen.add(nums)
        rows.append({
            "id": f"{prefix}-{len(rows):06d}",
            "prompt": "What is " + " + ".join(map(str, nums)) + "?",
            "answer": str(sum(nums)),
            "hints": addition_hints(list(nums)),
            "task": "addition",
        })
    return rows


def split_rows(rows: list[dict[str, Any]], n_eval: int, seed: int = 0
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Deterministic train/held-out split (no prompt appears in both)."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    held = set(order[:n_eval])
    return [r for i, r in enumerate(rows) if i not in held], [r for i, r in enumerate(rows) if i in held]


def make_demo_data(out: Path, n_train: int, n_eval: int, seed: int) -> tuple[Path, Path]:
    """The demo task: 2-term addition of numbers < 100, written to OUT/train.jsonl and OUT/eval.jsonl."""
    rows = make_addition_rows(n_train + n_eval, digits=2, terms=2, seed=seed)
    train, held = split_rows(rows, n_eval, seed)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "eval.jsonl", held)
    return out / "train.jsonl", out / "eval.jsonl"
