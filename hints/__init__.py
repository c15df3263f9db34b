"""Progressive hints (Keye-VL 1.5): five levels, a scheduler, a sampler (plan/update) with the
minimal-hint search, and the Table-9 probe.

Pure logic: nothing here imports torch, ray or vllm at module level. See docs/hints.md.
"""

from hints.config import HintsConfig
from hints.levels import HintLevel, level_label, level_name
from hints.sampler import Draw, HintSampler
from hints.scheduler import HINT_POLICIES, HintScheduler

__all__ = ["HINT_POLICIES", "Draw", "HintLevel", "HintSampler", "HintScheduler", "HintsConfig",
           "level_label", "level_name"]
