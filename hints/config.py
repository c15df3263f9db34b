"""`HintsConfig`: the `hints:` section of a GSPO config (values only; see docs/hints.md).

A response is correct when its reward reaches the run's `reward.threshold`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from hints.hard import HARD_RULES
from hints.inject import DEFAULT_TEMPLATE, check_template
from hints.levels import MAX_LEVEL
from hints.scheduler import HINT_POLICIES, PolicyParams
from posttrain.core.config import Section


class HintsConfig(Section):
    enabled: bool = Field(False, description="Append hints to hard prompts during RL.")
    policy: str = Field("progressive", description="Registered hint policy: progressive, fixed.")
    source: Literal["dataset", "teacher"] = Field(
        "dataset", description="'dataset': row['hints'][level-1]; 'teacher': generated and cached.")
    teacher: str | None = Field(None, description="Teacher model folder (source=teacher); part of the cache key.")
    cache_path: str | None = Field(None, description="Teacher hint cache (JSONL); default RUN_DIR/hint_cache.jsonl.")
    template: str = Field(DEFAULT_TEMPLATE, description="How the hint is appended: uses {question} and {hint}.")
    train_prompt: Literal["hinted", "plain"] = Field(
        "hinted", description="The prompt a hinted rollout is trained on: 'hinted' (Keye: the prompt it was "
        "sampled from) or 'plain' (the question without the hint, so what is learned is what an unhinted "
        "prompt can use; off-policy, needs algo.old_logprobs=trainer).")
    hard_rule: str = Field("zero_pass", description="Registered hard-case rule: zero_pass, pass_rate_at_most.")
    k: int = Field(1, ge=1, description="Unhinted attempts (scored groups) the hard rule looks at.")
    max_pass_rate: float = Field(0.0, ge=0.0, le=1.0, description="For hard_rule=pass_rate_at_most.")
    start_level: int = Field(1, ge=1, le=MAX_LEVEL, description="First level of a newly hard prompt.")
    max_level: int = Field(MAX_LEVEL, ge=1, le=MAX_LEVEL, description="Highest level the scheduler uses.")
    raise_after: int = Field(1, ge=1, description="All-wrong groups at a level before moving up.")
    lower_threshold: float = Field(0.5, gt=0.0, le=1.0, description="Pass rate at a level that moves it down.")
    lower_window: int = Field(1, ge=1, description="Groups at a level whose pass rate is compared.")
    fixed_level: int = Field(0, ge=0, le=MAX_LEVEL, description="Level of every prompt with policy=fixed.")
    search: Literal["none", "linear"] = Field(
        "none", description="linear: at its next visit, a newly hard prompt is sampled at every level 1..max_level "
        "in the same step; its minimal level is the lowest with a correct response (the probes train too).")
    max_history: int = Field(64, ge=1, description="Attempts kept per prompt in the state.")
    eval_hard_rows: int = Field(
        256, ge=0, description="Each eval also scores up to this many hard training prompts greedily without "
        "hints (hints/hard_pass_rate_no_hint); 0 turns it off.")
    init_state: str | None = Field(None, description="hints_state.json of an earlier round to start from.")

    @field_validator("search", mode="before")
    @classmethod
    def _search(cls, v: str) -> str:
        if v == "bisect":
            raise ValueError("hints.search=bisect needs rounds of sampling one after another; the search now runs "
                             "inside one RL step at every level at once: use hints.search=linear")
        return v

    @model_validator(mode="after")
    def _teacher_named(self) -> "HintsConfig":
        if self.enabled and self.source == "teacher" and not self.teacher:
            raise ValueError("hints.source=teacher needs hints.teacher=MODEL_FOLDER (the model that writes the "
                             "hints)")
        return self

    @field_validator("template")
    @classmethod
    def _template(cls, v: str) -> str:
        return check_template(v)

    @field_validator("policy")
    @classmethod
    def _policy(cls, v: str) -> str:
        if v not in HINT_POLICIES:
            raise ValueError(f"unknown hint policy {v!r}; use one of {', '.join(HINT_POLICIES.names())}")
        return v

    @field_validator("hard_rule")
    @classmethod
    def _rule(cls, v: str) -> str:
        if v not in HARD_RULES:
            raise ValueError(f"unknown hard-case rule {v!r}; use one of {', '.join(HARD_RULES.names())}")
        return v

    def policy_params(self) -> PolicyParams:
        return PolicyParams(
            k=self.k, hard_rule=self.hard_rule, max_pass_rate=self.max_pass_rate,
            start_level=self.start_level, max_level=self.max_level, raise_after=self.raise_after,
            lower_threshold=self.lower_threshold, lower_window=self.lower_window,
            fixed_level=self.fixed_level)
