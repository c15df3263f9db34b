"""Offline reasoning task for the LongCoT pipeline: addition worked column by column.

A reasoning path is the column steps (tasks.addition's hint steps) and a final line:

    ones 7+5=12 write 2 carry 1; tens 4+3+1=8 write 8 carry 0. The answer is 82

so both levels of the pipeline's judge are checkable by rule: `cot_answer` reads the
final answer, `cot_steps` re-does every step's arithmetic (the sum, the written digit,
the carry, and that each step's digits are the prompt's digits of that column with the
previous carry). A path can be right at one level and wrong at the other: a lucky final
answer after a wrong step, or correct steps with a miscopied answer.

>>> row = make_cot_rows(1, seed=0)[0]
>>> cot_answer(row["completion"], row), cot_steps(row["completion"], row)
(1.0, 1.0)
>>> cot_steps("ones 7+5=13 write 3 carry 1. The answer is 92", {"prompt": "What is 47 + 35?"})
0.0
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from posttrain.core.data import write_jsonl
from posttrain.tasks.addition import _column_steps, make_addition_rows, split_rows
from rewards.api import reward

_ANSWER_RE = re.compile(r"The answer is (-?\d+)")
_TERMS_RE = re.compile(r"\d+")


def cot_text(terms: list[int]) -> str:
    """The reference reasoning path of `sum(terms)`."""
    return "; ".join(_column_steps(terms)) + f". The answer is {sum(terms)}"


def make_cot_rows(n: int, digits: int = 2, terms: int = 2, seed: int = 0, prefix: str = "cot") -> list[dict[str, Any]]:
    """Addition rows whose `completion` is the reference reasoning path (`answer`: the sum)."""
    rows = make_addition_rows(n, digits=digits, terms=terms, seed=seed, prefix=prefix)
    out = []
    for r in rows:
        nums = [int(t) for t in _TERMS_RE.findall(r["prompt"])]
        out.append({"id": r["id"], "prompt": r["prompt"], "answer": r["answer"], "completion": cot_text(nums),
                    "task": "addition_cot"})
    return out


def final_answer(text: str) -> str | None:
    m = _ANSWER_RE.findall(text)
    return m[-1] if m else None


@reward("cot_answer")
def cot_answer(completion: str, sample: dict) -> float:
    """Answer level: 1.0 when the last "The answer is N" equals the row's `answer`."""
    if "answer" not in sample:
        raise KeyError("sample has no 'answer' field")
    return float(final_answer(completion) == str(sample["answer"]).strip())


@reward("cot_steps")
def cot_steps(completion: str, sample: dict) -> float:
    """Step level: the fraction of the expected column steps that the path gets right, in
    order (a missing, extra or miscomputed step counts against it); 0.0 without steps."""
    terms = [int(t) for t in _TERMS_RE.findall(str(sample.get("prompt", "")))]
    if not terms:
        raise KeyError("sample has no 'prompt' with numbers to check the steps against")
    body = completion.split(". The answer is")[0]
    got = [s.strip() for s in body.split(";") if s.strip()]
    want = _column_steps(terms)
    if not got:
        return 0.0
    right = sum(g == w for g, w in zip(got, want))
    return right / max(len(want), len(got))


def make_cot_data(out: Path, n_train: int, n_eval: int, seed: int) -> tuple[Path, Path]:
    """OUT/train.jsonl (rows with reference paths), OUT/eval.jsonl (held out) and OUT/pool.jsonl
    (`n_train` more prompts, disjoint from both: the LongCoT pipeline's prompts)."""
    rows = make_cot_rows(2 * n_train + n_eval, seed=seed)
    train, rest = rows[:n_train], rows[n_train:]
    pool, held = split_rows(rest, n_eval, seed)
    # `messages`: SFT trains on the reference path in the chat template (a plain prompt/completion
    # string pair would be trained as raw text, and a chat-templated eval would never match it)
    write_jsonl(out / "train.jsonl", [dict(r, messages=[{"role": "user", "content": r["prompt"]},
                                                        {"role": "assistant", "content": r["completion"]}])
                                      for r in train])
    write_jsonl(out / "eval.jsonl", held)
    write_jsonl(out / "pool.jsonl", [{k: v for k, v in r.items() if k != "completion"} for r in pool])
    return out / "train.jsonl", out / "eval.jsonl"
