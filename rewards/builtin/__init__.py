"""Built-in rule rewards; importing this package registers them.

exact, math, format, length, ifeval, code; the judge and reward-model services
register lazily (they import Ray only when built).
"""

from rewards import judge, reward_model  # noqa: E402,F401  (services; Ray is imported when built)
from rewards.builtin import (  # noqa: F401
    code,  # noqa: E402,F401
    exact,
    format,
    http,  # noqa: E402,F401
    math_answer,
)
from rewards.builtin.ifeval import checks  # noqa: F401
