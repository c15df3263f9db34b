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
  with `align.on_drop: stop` checkpoints and stops (summary `interrupted: true`), or with
  `align.on_drop: rollback` trains on and ends with the model of the last eval within the
  limit (RUN_DIR/final is replaced by it; the summary's `*_after` numbers are that eval's).
- Rollback selects a model on the guard's rows, so those rows must not be the ones the task
  accuracy is reported on: `align.task_eval` names the reported set (default: the guard's;
  with `rollback` it must be another extra eval with another data file).

Summary (RUN_DIR/summary.json): the GSPO summary plus `constraint_rate_before/after`,
`task_accuracy_before/after` (`align.task_eval`, default the guarded eval), `<name>_before/after`
for every other extra eval, `guard` (with `final_step`, the step of the final model) and `final_model`.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, Callable, Literal

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
    on_drop: Literal["warn", "stop", "rollback"] = Field(
        "warn", description="warn: log and go on; stop: checkpoint and stop; rollback: train on, end with the "
        "model of the last eval within the limit.")
    task_eval: str | None = Field(
        None, description="The eval.extra_evals entry reported as task_accuracy_before/after (null: guard_eval). "
        "With on_drop: rollback, another set than the guard's: selecting on the reported rows biases them.")


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
        if align.task_eval is not None and ev is not None and align.task_eval not in names:
            raise ValueError(f"task_eval={align.task_eval!r} names no eval.extra_evals entry (have {names or 'none'})")
        if align.on_drop == "rollback":
            if align.guard_eval is None:
                raise ValueError("on_drop='rollback' needs a guard: set align.guard_eval")
            data = {e.name: e.data for e in ev.extra_evals} if ev is not None else {}
            if align.task_eval in (None, align.guard_eval) or data.get(align.task_eval) == data.get(align.guard_eval):
                raise ValueError("on_drop='rollback' picks the final model on the guard's rows, so the task accuracy "
                                 "must be reported on other rows: add an eval.extra_evals entry with its own data "
                                 "file and name it in align.task_eval")
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
                 stop: Any = None, save: Callable[[int], None] | None = None, last_good: int | None = None):
        self.name, self.max_drop, self.on_drop = name, max_drop, on_drop
        self.baseline, self.stop, self.save = baseline, stop, save
        self.tripped_at: int | None = None
        self.last_good = last_good  # rollback: the step of the last eval within the limit (its model is saved)
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
        if not tripped and self.on_drop == "rollback":
            if self.save is not None:
                self.save(step)
            self.last_good = step
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
                "tripped_at_step": self.tripped_at,
                **({"last_good_step": self.last_good} if self.on_drop == "rollback" else {})}


def _first(records: list[dict], key: str) -> float | None:
    return next((r[key] for r in records if r.get(key) is not None), None)


def _last(records: list[dict], key: str) -> float | None:
    return next((r[key] for r in reversed(records) if r.get(key) is not None), None)


def _at(step: int) -> Callable[[list[dict], str], float | None]:
    """The value logged at `step` (the rolled-back model's eval)."""
    return lambda records, key: next((r[key] for r in reversed(records) if r["step"] == step
                                      and r.get(key) is not None), None)


GUARD_MODEL = "guard_model"  # RUN_DIR/guard_model: with on_drop: rollback, the model of the last eval within the limit


def _last_good_step(records: list[dict], run_dir: Path) -> int | None:
    """On resume: the last eval within the limit, if its model was saved."""
    if not (run_dir / GUARD_MODEL / "config.json").is_file():
        return None
    return next((r["step"] for r in reversed(records) if r.get("guard/tripped") == 0.0), None)


def _replace_dir(target: Path, source: Path) -> None:
    """Make `target` a copy of `source`: copied beside it first, then swapped in by renames, so a kill
    never leaves a half-copied `target` (at worst the old one under `.old-<name>`)."""
    new, old = target.with_name(f".new-{target.name}"), target.with_name(f".old-{target.name}")
    for stale in (new, old):
        shutil.rmtree(stale, ignore_errors=True)
    shutil.copytree(source, new)
    if target.exists():
        target.rename(old)
    new.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def run(cfg: Config, run_dir: str | Path, resume: bool = False) -> dict[str, Any]:
    trainer = GSPOTrainer(cfg, Path(run_dir), resume=resume)
    guard_dir = trainer.run.path / GUARD_MODEL
    try:
        records = trainer.run.read_metrics() if resume else []
        guard_name = cfg.align.guard_eval
        save = lambda step: trainer.policy.save_final(guard_dir, trainer.processor or trainer.tok)  # noqa: E731
        guard = TaskGuard(guard_name, cfg.align.max_task_drop, cfg.align.on_drop,
                          _first(records, f"eval/{guard_name}") if guard_name else None, trainer.stop,
                          save=save, last_good=_last_good_step(records, trainer.run.path))
        trainer.eval_hooks.append(guard)
        summary = trainer.fit()
        records = trainer.run.read_metrics()
    finally:
        trainer.close()
    final_step, after = summary["steps"], _last
    if cfg.align.on_drop == "rollback" and guard.last_good is not None and summary.get("final_model"):
        if guard.last_good != final_step:  # the last evals fell past the limit: end with the last good model
            log.warning("align guard: rolling back to the model of step %d (%s)", guard.last_good, guard_dir)
            _replace_dir(trainer.run.final, guard_dir)
        final_step, after = guard.last_good, _at(guard.last_good)
    task_name = cfg.align.task_eval or guard_name
    task_key = f"eval/{task_name}" if task_name else None
    summary.update({
        "phase": "align",
        "constraint_rate_before": summary.get("accuracy_before_rl"),
        "constraint_rate_after": after(records, "eval/accuracy") if after is not _last else summary.get("accuracy_after_rl"),
        "task_accuracy_before": _first(records, task_key) if task_key else None,
        "task_accuracy_after": after(records, task_key) if task_key else None,
        **{f"{e.name}_{when}": pick(records, f"eval/{e.name}") for e in cfg.eval.extra_evals
           if e.name != task_name for when, pick in (("before", _first), ("after", after))},
        "guard": {**guard.report(), "final_step": final_step},
        "reward_components": [c.name for c in cfg.reward.components],
    })
    trainer.run.write_summary(summary)
    return summary
