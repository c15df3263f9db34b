"""Progressive hints (Keye-VL 1.5): five levels, minimal-hint search, a scheduler.

Pure logic: nothing here imports torch, ray or vllm at module level. See docs/hints.md.
"""

from hints.config import HintsConfig
from hints.controller import HintController
from hints.levels import HintLevel, level_label, level_name
from hints.scheduler import HINT_POLICIES, HintScheduler

__all__ = ["HINT_POLICIES", "HintController", "HintLevel", "HintScheduler", "HintsConfig",
           "level_label", "level_name"]
