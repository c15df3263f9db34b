"""The hint scheduler: per-prompt hint levels driven by each prompt's history.

Pure logic, no torch. A policy is a registered function
`policy(state, params) -> next level`, called after every observed group:

- `progressive` (default): a hard prompt at level 0 (see `hints.hard`) starts at its
  minimal level if a probe found one, else at `start_level`; a prompt whose last
  `raise_after` groups at its level were all wrong moves one level up (capped at
  `max_level`); one whose pass rate over its last `lower_window` groups at its level
  reaches `lower_threshold` moves one level down, down to 0 (no hint).
- `fixed`: every prompt at `fixed_level` (an ablation arm or an evaluation).

The state (per prompt: level, minimal level, recent history) is JSON-serialisable;
`save`/`load` write it atomically so it survives a kill and carries across rounds.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from hints.hard import HARD_RULES, Attempt, is_hard, pass_rate, trailing_run
from hints.levels import MAX_LEVEL, NO_HINT, check_level
from posttrain.core.registry import Registry

STATE_VERSION = 1


@dataclass(frozen=True)
class PolicyParams:
    k: int = 1
    hard_rule: str = "zero_pass"
    max_pass_rate: float = 0.0
    start_level: int = 1
    max_level: int = MAX_LEVEL
    raise_after: int = 1
    lower_threshold: float = 0.5
    lower_window: int = 1
    fixed_level: int = 0


@dataclass
class PromptState:
    level: int = NO_HINT
    minimal_level: int | None = None
    has_reference: bool = True
    history: list[Attempt] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "minimal_level": self.minimal_level,
                "history": [a.to_list() for a in self.history]}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> "PromptState":
        try:
            return cls(level=check_level(data["level"], f"{where}.level"),
                       minimal_level=(None if data.get("minimal_level") is None
                                      else check_level(data["minimal_level"], f"{where}.minimal_level")),
                       history=[Attempt.from_list(a) for a in data.get("history", [])])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{where}: bad prompt state ({e}); expected "
                             "{'level': 0-5, 'minimal_level': int|null, 'history': [[step, level, correct, total], ...]}"
                             ) from None


Policy = Callable[[PromptState, PolicyParams], int]
HINT_POLICIES: Registry[Policy] = Registry("hint policy")


@HINT_POLICIES.register("progressive")
def progressive(state: PromptState, p: PolicyParams) -> int:
    level = state.level
    if level == NO_HINT:
        if is_hard(state.history, p.k, p.hard_rule, p.max_pass_rate, state.has_reference):
            return min(state.minimal_level or p.start_level, p.max_level)
        return NO_HINT
    run = trailing_run(state.history, level)
    if len(run) >= p.raise_after and all(a.correct == 0 for a in run[-p.raise_after:]):
        return min(level + 1, p.max_level)
    if len(run) >= p.lower_window and pass_rate(run[-p.lower_window:]) >= p.lower_threshold:
        return level - 1
    return level


@HINT_POLICIES.register("fixed")
def fixed(state: PromptState, p: PolicyParams) -> int:
    return p.fixed_level


class HintScheduler:
    """Per-prompt hint levels; `observe` records a group and applies the policy."""

    def __init__(self, policy: str = "progressive", params: PolicyParams | None = None,
                 max_history: int = 64):
        self.policy_name = policy
        self.policy = HINT_POLICIES.get(policy)
        self.params = params or PolicyParams()
        HARD_RULES.get(self.params.hard_rule)  # unknown names fail here, not mid-run
        self.max_history = max_history
        self.prompts: dict[str, PromptState] = {}

    def _state(self, prompt_id: str) -> PromptState:
        if prompt_id not in self.prompts:
            self.prompts[prompt_id] = PromptState(
                level=self.params.fixed_level if self.policy_name == "fixed" else NO_HINT)
        return self.prompts[prompt_id]

    def level(self, prompt_id: str) -> int:
        state = self.prompts.get(prompt_id)
        if state is None:
            return self.params.fixed_level if self.policy_name == "fixed" else NO_HINT
        return state.level

    def observe(self, prompt_id: str, step: int, level: int, correct: int, total: int,
                has_reference: bool = True) -> int:
        """Record `correct` of `total` responses at `level`; return the prompt's next level."""
        state = self._state(prompt_id)
        state.has_reference = has_reference
        state.history.append(Attempt(step, check_level(level, f"prompt {prompt_id!r}"), correct, total))
        del state.history[:-self.max_history]
        state.level = check_level(self.policy(state, self.params), f"policy {self.policy_name!r}")
        return state.level

    def set_minimal(self, prompt_id: str, level: int | None) -> None:
        """Record a probed minimal level; the prompt starts there (None: none found, use max)."""
        state = self._state(prompt_id)
        state.minimal_level = None if level is None else check_level(level, f"prompt {prompt_id!r}")
        state.level = self.params.max_level if level is None else level

    def levels(self) -> dict[str, int]:
        return {pid: s.level for pid, s in self.prompts.items()}

    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "policy": self.policy_name,
                "prompts": {pid: s.to_dict() for pid, s in sorted(self.prompts.items())}}

    def load_state_dict(self, state: dict[str, Any], where: str = "hint scheduler state") -> None:
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError(f"{where}: expected a hint scheduler state with version {STATE_VERSION}, "
                             f"got {str(state)[:80]!r}; was it written by `HintScheduler.save`?")
        self.prompts = {pid: PromptState.from_dict(s, f"{where}: prompt {pid!r}")
                        for pid, s in state.get("prompts", {}).items()}

    def save(self, path: str | Path) -> Path:
        """Atomic write: a kill leaves either the old file or the new one."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        with tmp.open("w") as f:
            json.dump(self.state_dict(), f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        return path

    def load(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"hint state file {path} does not exist; check hints.init_state "
                                    "(a hints_state.json written by an earlier round)")
        try:
            state = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg}); delete it or point to another round's file") from None
        self.load_state_dict(state, str(path))
