"""The five hint levels of Keye-VL 1.5's progressive hint sampling, plus level 0.

Level 0 means "no hint". Levels 1-5 add ever more of the solution:

>>> [level_name(k) for k in range(6)]
['none', 'concept', 'strategy', 'tools', 'steps', 'solution']
>>> check_level(7, "hints.start_level")
Traceback (most recent call last):
...
ValueError: hints.start_level: hint level must be an integer 0-5 (0 = no hint, 5 = full solution), got 7
"""

from __future__ import annotations

from enum import IntEnum


class HintLevel(IntEnum):
    NONE = 0
    CONCEPT = 1   # the key idea or what to notice
    STRATEGY = 2  # which approach to take
    TOOLS = 3     # the formula or tool to apply
    STEPS = 4     # the intermediate steps
    SOLUTION = 5  # the complete worked solution


NO_HINT = int(HintLevel.NONE)
MIN_LEVEL = int(HintLevel.CONCEPT)
MAX_LEVEL = int(HintLevel.SOLUTION)
ALL_LEVELS = tuple(range(NO_HINT, MAX_LEVEL + 1))  # 0..5
HINT_LEVELS = tuple(range(MIN_LEVEL, MAX_LEVEL + 1))  # 1..5

LEVEL_DESCRIPTIONS = {
    HintLevel.NONE: "no hint",
    HintLevel.CONCEPT: "concept / observation: the key idea or what to notice",
    HintLevel.STRATEGY: "strategy / method: which approach to take",
    HintLevel.TOOLS: "tools / formula: the formula or tool to apply",
    HintLevel.STEPS: "steps / calculation: the intermediate steps",
    HintLevel.SOLUTION: "complete solution: the full worked solution",
}


def check_level(level: object, where: str = "hint level") -> int:
    """`level` as an int 0-5, or a ValueError naming `where`."""
    if isinstance(level, bool) or not isinstance(level, int) or not NO_HINT <= level <= MAX_LEVEL:
        raise ValueError(
            f"{where}: hint level must be an integer 0-5 (0 = no hint, 5 = full solution), got {level!r}"
        )
    return int(level)


def level_name(level: int) -> str:
    return HintLevel(check_level(level)).name.lower()


def level_label(level: int) -> str:
    """Short label for tables: 'none', 'L1'..'L5' (the report's Table 9 rows)."""
    return "none" if check_level(level) == NO_HINT else f"L{level}"
