"""Hard-case detection: which prompts should get a hint.

A prompt is hard when its pass rate over its last `k` attempts without a hint is at
most `max_pass_rate` (Keye's rule is 0: always wrong) and it has a reference answer.
An *attempt* is one scored group: the prompt was used once and its G responses were
checked. Only the trailing run of unhinted attempts counts, so a prompt whose hint was
just removed is tried again without a hint before it can be called hard again.

>>> hist = [Attempt(step=0, level=0, correct=0, total=4)]
>>> is_hard(hist, k=1)
True
>>> is_hard(hist, k=2)  # not enough evidence yet
False
>>> is_hard(hist + [Attempt(1, 0, 1, 4)], k=2)
False
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from posttrain.core.registry import Registry


@dataclass(frozen=True)
class Attempt:
    """One scored group of a prompt: `correct` of `total` responses at hint `level`."""

    step: int
    level: int
    correct: int
    total: int

    def to_list(self) -> list[int]:
        return [self.step, self.level, self.correct, self.total]

    @classmethod
    def from_list(cls, item: Sequence[int]) -> "Attempt":
        step, level, correct, total = (int(x) for x in item)
        if not 0 <= correct <= total:
            raise ValueError(f"attempt {list(item)}: correct must be between 0 and total")
        return cls(step, level, correct, total)


def trailing_run(history: Sequence[Attempt], level: int) -> list[Attempt]:
    """The most recent consecutive attempts made at `level` (empty if the last was not)."""
    out: list[Attempt] = []
    for a in reversed(history):
        if a.level != level:
            break
        out.append(a)
    return out[::-1]


def pass_rate(attempts: Sequence[Attempt]) -> float:
    total = sum(a.total for a in attempts)
    return sum(a.correct for a in attempts) / total if total else float("nan")


HardRule = Callable[[Sequence[Attempt], float], bool]
HARD_RULES: Registry[HardRule] = Registry("hard-case rule")


@HARD_RULES.register("zero_pass")
def zero_pass(attempts: Sequence[Attempt], max_pass_rate: float = 0.0) -> bool:
    """Keye's rule: every response of the last k attempts was wrong."""
    return sum(a.total for a in attempts) > 0 and all(a.correct == 0 for a in attempts)


@HARD_RULES.register("pass_rate_at_most")
def pass_rate_at_most(attempts: Sequence[Attempt], max_pass_rate: float = 0.0) -> bool:
    """Pass rate over the last k attempts is at most `max_pass_rate`."""
    rate = pass_rate(attempts)
    return rate == rate and rate <= max_pass_rate  # rate != rate: no responses yet


def is_hard(history: Sequence[Attempt], k: int = 1, rule: str = "zero_pass",
            max_pass_rate: float = 0.0, has_reference: bool = True) -> bool:
    """Whether the prompt's last `k` unhinted attempts satisfy `rule` (see module doc)."""
    if not has_reference or k < 1:
        return False
    run = trailing_run(history, 0)
    if len(run) < k:
        return False
    return HARD_RULES.get(rule)(run[-k:], max_pass_rate)
