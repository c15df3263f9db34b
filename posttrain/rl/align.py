"""`posttrain align`: alignment RL (the recipe's last stage) as GSPO with a reward mix.

The config is the GSPO config (`posttrain.rl.config.Config`: model, data, rollout, algo,
reward, eval, ...) plus an `align:` section. Nothing of the trainer is copied: `run`
builds a `GSPOTrainer` and adds one eval hook, the task guard.

- Reward mix: `reward.components` names the rewards, weights and per-reward failure
  policy, e.g. `ifeval` (hard constraints), `format` (think / no_think / JSON /
  Markdown), `judge` (soft constraints, reference comparison), `reward_model` (no
  reference), and the task reward (`math`, or `posttrain.tasks.instructions:final_number`).
  Per-component metrics come from the scorer: `reward/<name>/mean` (over samples that
  scored), `reward/<name>/failed`, `reward/<name>/timeouts`; a failed reward is a
  failure (excluded, or `failure_value` with `on_failure: value`), never a silent 0.
- Constraint rate: `data.eval` holds constrained held-out prompts and `eval.reward`
  (default `ifeval`) scores them; it is logged as `eval/accuracy` and, by the guard
  hook, as `eval/constraint_rate`.
- Task guard: `eval.extra_evals` holds a held-out reasoning set (e.g. `{name:
  task_accuracy, data: task.jsonl, reward: math}`) and `align.guard_eval` names it.
  Each eval logs `eval/task_accuracy`, `guard/task_drop_points` (first eval minus now,
  in points) and `guard/tripped`; past `align.max_task_drop` points the run warns, or
  with `align.on_drop: stop` checkpoints and stops (summary `interrupted: true`).

Summary (RUN_DIR/summary.json): the GSPO summary plus `constraint_rate_before/after`,
`task_accuracy_before/after` (the guarded eval), `<name>_before/after` for every other
extra eval, `guard` and `final_model`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from posttrain.core.config import Section
from posttrain.core.run_dir import final_output
from posttrain.rl.config import Config as RLConfig
from posttrain.rl.config import EvalConfig
from posttrain.rl.trainer import GSPOTrainer
from rewards.config import default_reward

log = logging.getLogger(__name__)


class AlignSection(Section):
    guard_eval: str | None = Field(
        "task_accuracy", description="Name of the eval.extra_evals entry whose drop is guarded (null: no guard).")
    max_task_drop: float = Field(2.0, ge=0.0, description="Allowed drop of the guarded eval, in points (0-100).")
    on_drop: Literal["warn", "stop"] = Field("warn", description="warn: log and go on; stop: checkpoint and stop.")


def _align_eval() -> EvalConfig:
    return EvalConfig(reward=default_reward("ifeval", workers=1))


class Config(RLConfig):
    phase: Literal["align"] = "align"  # type: ignore[assignment]
    eval: EvalConfig = Field(default_factory=_align_eval)
    align: AlignSection = Field(default_factory=AlignSection)

    @field_validator("align")
    @classmethod
    def _guard_names_an_eval(cls, align: AlignSection, info: ValidationInfo) -> AlignSection:
        ev = info.data.get("eval")
        names = [e.name for e in ev.extra_evals] if ev is not None else []
        if align.guard_eval is not None and ev is not None and align.guard_eval not in names:
            raise ValueError(f"guard_eval={align.guard_eval!r} names no eval.extra_evals entry (have "
                             f"{names or 'none'}); add eval.extra_evals=[{{name: {align.guard_eval}, data: "
                             "TASK.jsonl, reward: math}] or set align.guard_eval=null")
        return align


outputs = final_output


class TaskGuard:
    """Compares the guarded eval with its first value; an eval hook for GSPOTrainer.

    >>> g = TaskGuard("task_accuracy", max_drop=2.0, on_drop="warn")
    >>> g(0, {"eval/task_accuracy": 0.90, "eval/accuracy": 0.2})["guard/tripped"]
    0.0
    >>> m = g(10, {"eval/task_accuracy": 0.87, "eval/accuracy": 0.5})
    >>> round(m["guard/task_drop_points"], 6), m["guard/tripped"], m["eval/constraint_rate"]
    (3.0, 1.0, 0.5)
    """

    def __init__(self, name: str | None, max_drop: float, on_drop: str, baseline: float | None = None,
                 stop: Any = None):
        self.name, self.max_drop, self.on_drop = name, max_drop, on_drop
        self.baseline, self.stop = baseline, stop
        self.tripped_at: int | None = None
        self.worst_drop = 0.0

    def __call__(self, step: int, metrics: dict[str, Any]) -> dict[str, float]:
        out = {}
        if "eval/accuracy" in metrics:
            out["eval/constraint_rate"] = metrics["eval/accuracy"]
        value = metrics.get(f"eval/{self.name}") if self.name else None
        if value is None:
            return out
        if self.baseline is None:
            self.baseline = value
        drop = round((self.baseline - value) * 100, 6)  # 1.00 -> 0.98 is 2 points, not 2.0000000000000018
        self.worst_drop = max(self.worst_drop, drop)
        tripped = drop > self.max_drop
        out.update({"guard/task_drop_points": drop, "guard/tripped": float(tripped)})
        if tripped:
            self.tripped_at = step if self.tripped_at is None else self.tripped_at
            log.warning("align guard: eval/%s fell %.1f points (%.3f -> %.3f) at step %d, more than %.1f%s",
                        self.name, drop, self.baseline, value, step, self.max_drop,
                        "; stopping" if self.on_drop == "stop" else "")
            if self.on_drop == "stop" and self.stop is not None:
                self.stop.requested = True
        return out

    def report(self) -> dict[str, Any]:
        return {"metric": f"eval/{self.name}" if self.name else None, "max_drop_points": self.max_drop,
                "on_drop": self.on_drop, "worst_drop_points": round(self.worst_drop, 3),
                "tripped_at_step": self.tripped_at}


def _first(records: list[dict], key: str) -> float | None:
    return next((r[key] for r in records if r.get(key) is not None), None)


def _last(records: list[dict], key: str) -> float | None:
    return next((r[key] for r in reversed(records) if r.get(key) is not None), None)


def run(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    trainer = GSPOTrainer(cfg, Path(run_dir), resume=resume)
    try:
        records = trainer.run.read_metrics() if resume else []
        guard_name = cfg.align.guard_eval
        guard = TaskGuard(guard_name, cfg.align.max_task_drop, cfg.align.on_drop,
                          _first(records, f"eval/{guard_name}") if guard_name else None, trainer.stop)
        trainer.eval_hooks.append(guard)
        summary = trainer.fit()
        records = trainer.run.read_metrics()
    finally:
        trainer.close()
    task_key = f"eval/{guard_name}" if guard_name else None
    summary.update({
        "phase": "align",
        "constraint_rate_before": summary.get("accuracy_before_rl"),
        "constraint_rate_after": summary.get("accuracy_after_rl"),
        "task_accuracy_before": _first(records, task_key) if task_key else None,
        "task_accuracy_after": _last(records, task_key) if task_key else None,
        **{f"{e.name}_{when}": pick(records, f"eval/{e.name}") for e in cfg.eval.extra_evals
           if e.name != guard_name for when, pick in (("before", _first), ("after", _last))},
        "guard": guard.report(),
        "reward_components": [c.name for c in cfg.reward.components],
    })
    trainer.run.write_summary(summary)
    return summary
