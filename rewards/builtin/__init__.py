"""Built-in rule rewards; importing this package registers them.

exact, math, format, length, ifeval, code; the judge and reward-model services
register lazily (they import Ray only when built).
"""

from rewards.builtin import exact, format, math_answer  # noqa: F401
from rewards.builtin.ifeval import checks  # noqa: F401
from rewards.builtin import code  # noqa: E402,F401
from rewards import judge, reward_model  # noqa: E402,F401  (services; Ray is imported when built)
from rewards.builtin import http  # noqa: E402,F401
