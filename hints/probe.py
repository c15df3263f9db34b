"""The Table-9 probe: every prompt at every level 0-5, G responses each, through any
`Generator` (vLLM actors, HF generate, or a scripted fake in tests), judged with
`is_correct(texts, rows) -> [bool]`: all-wrong fraction and mean correct of G per level.

(The minimal-hint search of an RL run is part of the step: hints/sampler.py.)
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from hints.inject import DEFAULT_TEMPLATE, HINT_LEVEL_KEY, with_hint
from hints.levels import ALL_LEVELS, NO_HINT, check_level
from hints.metrics import LevelStats
from hints.sources import HintSource
from posttrain.core.data import chat_prompt_ids
from rollouts.types import PromptInput

IsCorrect = Callable[[list[str], list[dict[str, Any]]], list[bool]]
Encode = Callable[[Any], list[int]]


def hinted_rows(rows: Sequence[dict[str, Any]], level: int, source: HintSource,
                template: str = DEFAULT_TEMPLATE) -> list[dict[str, Any]]:
    hints = source.hints(rows, level) if level != NO_HINT else [""] * len(rows)
    return [with_hint(r, level, h, template) for r, h in zip(rows, hints)]


def sample_groups(generator: Any, encode: Encode, rows: Sequence[dict[str, Any]], sampling: Any,
                  step: int = 0) -> list[list[Any]]:
    """G rollouts per row, grouped by row; each rollout's meta records the hint level."""
    if not rows:
        return []
    prompts = [PromptInput(r["id"], encode(r["prompt"])) for r in rows]
    rollouts = generator.generate(prompts, sampling, step=step)
    n = sampling.n
    if len(rollouts) != len(rows) * n:
        raise RuntimeError(f"generator returned {len(rollouts)} rollouts for {len(rows)} prompts x n={n}; "
                           "a Generator must return len(prompts) * n, grouped by prompt")
    groups = [rollouts[i * n:(i + 1) * n] for i in range(len(rows))]
    for row, group in zip(rows, groups):
        for r in group:
            if r.prompt_id != row["id"]:
                raise RuntimeError(f"generator returned prompt {r.prompt_id!r} where {row['id']!r} was "
                                   "expected; rollouts must be grouped by prompt in input order")
            r.meta[HINT_LEVEL_KEY] = row.get(HINT_LEVEL_KEY, NO_HINT)
    return groups


def count_correct_groups(groups: list[list[Any]], rows: Sequence[dict[str, Any]], is_correct: IsCorrect
                         ) -> list[int]:
    texts = [r.text for g in groups for r in g]
    samples = [row for row, g in zip(rows, groups) for _ in g]
    verdicts = is_correct(texts, samples)
    counts, i = [], 0
    for g in groups:
        counts.append(sum(bool(v) for v in verdicts[i:i + len(g)]))
        i += len(g)
    return counts


def probe_table(generator: Any, encode: Encode, rows: Sequence[dict[str, Any]], source: HintSource,
                sampling: Any, is_correct: IsCorrect, template: str = DEFAULT_TEMPLATE,
                levels: Sequence[int] = ALL_LEVELS, step: int = 0) -> list[dict[str, Any]]:
    """Table 9: per level, the all-wrong fraction and mean correct of G over all `rows`."""
    stats = LevelStats()
    for lv in levels:
        hinted = hinted_rows(rows, check_level(lv), source, template)
        groups = sample_groups(generator, encode, hinted, sampling, step)
        for g, c in zip(groups, count_correct_groups(groups, hinted, is_correct)):
            stats.add(lv, c, len(g))
    return stats.table()


def prompt_encoder(tokenizer: Any) -> Encode:
    """encode(prompt) -> token ids: the chat template with the assistant turn opened."""
    def encode(prompt: Any) -> list[int]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        return chat_prompt_ids(tokenizer, messages)

    return encode


def reward_judge(scorer: Any, threshold: float) -> IsCorrect:
    """`is_correct` from a rewards `Scorer`: reward >= threshold; a failed reward is not correct."""

    def judge(texts: list[str], samples: list[dict[str, Any]]) -> list[bool]:
        rewards = scorer.score(texts, samples).rewards
        return [r is not None and r >= threshold for r in rewards]

    return judge
