"""Probing the policy with hints: the minimal-hint search and the Table-9 probe.

Both sample G responses per prompt through any `Generator` (vLLM actors, HF generate,
or a scripted fake in tests) and judge them with `is_correct(texts, rows) -> [bool]`.

- `minimal_levels`: for each (hard) prompt, the lowest level 1-5 at which at least one
  of G responses is correct, by a linear scan (levels 1, 2, ... for the prompts still
  unsolved; at most 5 rounds) or by bisection (assumes success is monotone in the
  level; at most 3 rounds). The responses at the minimal level are returned too:
  Keye trains on those hinted rollouts.
- `probe_table`: all prompts at every level 0-5: all-wrong fraction and mean correct of
  G per level, the report's Table 9.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from hints.inject import DEFAULT_TEMPLATE, HINT_LEVEL_KEY, with_hint
from hints.levels import ALL_LEVELS, MAX_LEVEL, MIN_LEVEL, NO_HINT, check_level
from hints.metrics import LevelStats
from hints.sources import HintSource

IsCorrect = Callable[[list[str], list[dict[str, Any]]], list[bool]]
Encode = Callable[[Any], list[int]]


def hinted_rows(rows: Sequence[dict[str, Any]], level: int, source: HintSource,
                template: str = DEFAULT_TEMPLATE) -> list[dict[str, Any]]:
    hints = source.hints(rows, level) if level != NO_HINT else [""] * len(rows)
    return [with_hint(r, level, h, template) for r, h in zip(rows, hints)]


def sample_groups(generator: Any, encode: Encode, rows: Sequence[dict[str, Any]], sampling: Any,
                  step: int = 0) -> list[list[Any]]:
    """G rollouts per row, grouped by row; each rollout's meta records the hint level."""
    from rollouts.types import PromptInput

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


@dataclass
class SearchResult:
    """Minimal level per prompt id (None: wrong even at the highest level) and its rollouts."""

    levels: dict[str, int | None] = field(default_factory=dict)
    rollouts: dict[str, list[Any]] = field(default_factory=dict)
    stats: LevelStats = field(default_factory=LevelStats)
    rounds: int = 0


def _try(generator, encode, rows, levels, source, template, sampling, is_correct, step, result
         ) -> list[bool]:
    """Sample each row at its own level; record stats; return success per row."""
    by_level: dict[int, list[int]] = {}
    for i, lv in enumerate(levels):
        by_level.setdefault(lv, []).append(i)
    ok = [False] * len(rows)
    for lv, idx in sorted(by_level.items()):
        hinted = hinted_rows([rows[i] for i in idx], lv, source, template)
        groups = sample_groups(generator, encode, hinted, sampling, step)
        for i, g, c in zip(idx, groups, count_correct_groups(groups, hinted, is_correct)):
            result.stats.add(lv, c, len(g))
            ok[i] = c > 0
            if ok[i]:
                result.rollouts[rows[i]["id"]] = g
    result.rounds += 1
    return ok


def minimal_levels(generator: Any, encode: Encode, rows: Sequence[dict[str, Any]], source: HintSource,
                   sampling: Any, is_correct: IsCorrect, strategy: str = "linear",
                   template: str = DEFAULT_TEMPLATE, max_level: int = MAX_LEVEL, step: int = 0
                   ) -> SearchResult:
    """The lowest hint level (1..max_level) at which a prompt gets a correct response."""
    check_level(max_level, "max_level")
    if strategy not in ("linear", "bisect"):
        raise ValueError(f"search strategy must be 'linear' or 'bisect', got {strategy!r}")
    result = SearchResult(levels={r["id"]: None for r in rows})
    if strategy == "linear":
        active = list(rows)
        for lv in range(MIN_LEVEL, max_level + 1):
            if not active:
                break
            ok = _try(generator, encode, active, [lv] * len(active), source, template, sampling,
                      is_correct, step, result)
            for row, good in zip(active, ok):
                if good:
                    result.levels[row["id"]] = lv
            active = [r for r, good in zip(active, ok) if not good]
        return result
    # Bisection over [lo, hi): hi = max_level + 1 stands for "no level works".
    lo = {r["id"]: MIN_LEVEL for r in rows}
    hi = {r["id"]: max_level + 1 for r in rows}
    while True:
        active = [r for r in rows if lo[r["id"]] < hi[r["id"]]]
        if not active:
            break
        mids = [(lo[r["id"]] + hi[r["id"]] - 1) // 2 for r in active]
        ok = _try(generator, encode, active, mids, source, template, sampling, is_correct, step, result)
        for row, mid, good in zip(active, mids, ok):
            if good:
                hi[row["id"]] = mid
            else:
                lo[row["id"]] = mid + 1
    for r in rows:
        result.levels[r["id"]] = hi[r["id"]] if hi[r["id"]] <= max_level else None
    # Keep only the rollouts made at the minimal level itself.
    result.rollouts = {pid: g for pid, g in result.rollouts.items()
                       if result.levels[pid] is not None and g[0].meta.get(HINT_LEVEL_KEY) == result.levels[pid]}
    return result


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
    from posttrain.data import chat_prompt_ids

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
