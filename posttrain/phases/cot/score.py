"""Step 5 of the LongCoT pipeline: a quality score 1-5 per kept path, and the SFT file with
the 4-5 paths upsampled.

The rule score (`score.method: rule`), one point each, from 1:
- +2 the answer level passed (always, for a kept path) and +1 the step level passed
  (a human-approved or human-edited path counts as passing both);
- +1 the path's confidence (mean log-prob) is at or above the median of the kept paths.
So a tier-A path the model was sure of scores 5, an unsure one 4, an approved tier-B path
4-5 after review, and a kept path that failed the step check 3-4.
`score.method: judge` takes the score from a judge reward instead (its value in [0, 1]
mapped to 1-5: 1 + round(4 * value)).

Upsampling: every path scoring >= `upsample_min_score` appears `upsample_factor` times in
the SFT file, others once; rows are chat prompt/completion pairs (SFT applies the chat template).
"""

from __future__ import annotations

import random
import statistics
from typing import Any

from posttrain.core.data import prompt_messages
from posttrain.phases.cot.judge import score_all
from rewards.config import RewardConfig


def rule_scores(records: list[dict[str, Any]]) -> list[int]:
    """The rule score of each kept path (module docstring).

    >>> rs = [{"tier": "A", "mean_logprob": -0.1}, {"tier": "A", "mean_logprob": -2.0},
    ...       {"tier": "B", "mean_logprob": -3.0, "steps_reward": 0.0, "answer_reward": 1.0}]
    >>> rule_scores(rs)  # the median log-prob is -2.0
    [5, 5, 3]
    """
    if not records:
        return []
    median = statistics.median(r["mean_logprob"] for r in records)
    out = []
    for r in records:
        reviewed = r.get("review") in ("approve", "edit")
        steps_ok = r["tier"] == "A" or reviewed
        out.append(1 + 2 + int(steps_ok) + int(r["mean_logprob"] >= median))
    return out


def judge_scores(records: list[dict[str, Any]], reward: RewardConfig) -> list[int]:
    return [1 + round(4 * min(1.0, max(0.0, v))) if v is not None else 1 for v in score_all(records, reward)]


def sft_rows(records: list[dict[str, Any]], factor: int, min_score: int, seed: int = 0) -> list[dict[str, Any]]:
    """Prompt/completion rows, paths scoring >= min_score repeated `factor` times, shuffled (seeded).

    >>> rows = sft_rows([{"id": "a", "prompt": "p", "completion": "x", "score": 5},
    ...                  {"id": "b", "prompt": "q", "completion": "y", "score": 3}], 3, 4)
    >>> sorted(r["id"] for r in rows)
    ['a', 'a#up1', 'a#up2', 'b']
    """
    out = []
    for r in records:
        copies = factor if r["score"] >= min_score else 1
        for c in range(copies):
            out.append({"id": r["id"] if c == 0 else f"{r['id']}#up{c}", **chat_row(r), "score": r["score"]})
    random.Random(seed).shuffle(out)
    return out


def chat_row(r: dict[str, Any]) -> dict[str, Any]:
    """An SFT row in the conversational form, so SFT applies the chat template (a plain-string
    prompt/completion pair would be trained as raw text, without it).

    >>> chat_row({"prompt": "q", "completion": "a"})["completion"]
    [{'role': 'assistant', 'content': 'a'}]
    """
    return {"prompt": prompt_messages(r), "completion": [{"role": "assistant", "content": r["completion"]}]}


def histogram(scores: list[int]) -> dict[str, int]:
    return {str(s): sum(x == s for x in scores) for s in range(1, 6)}
