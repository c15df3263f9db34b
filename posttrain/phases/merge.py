"""`posttrain merge`: merge expert checkpoints that share a base into one HF folder.

Keye-VL 1.5 stage 5 (../docs/merge.md): experts trained from one base on different tasks
are merged back. This phase tries each configured candidate (method, weights, density;
the arithmetic is PEFT's, posttrain/phases/merging.py), evaluates every candidate with the
greedy evaluator (rollouts.evaluate) on each expert's held-out rows, and keeps the best:

    selection rule: the highest *retention*, the smallest over the experts of
    merged accuracy / expert accuracy on that expert's task (each capped at 1);
    ties go to the higher mean accuracy over the tasks, then to the earlier candidate.

The candidates are compared on a validation split, `eval.validation_rows` held-out rows
of each task (a seeded random subset); the table (base, experts, the chosen merge) and
`merge_retention` are measured on the other held-out rows, which chose nothing
(`eval.validation_rows: 0` selects on the reported rows themselves: optimistic).

RUN_DIR/candidates.jsonl   one line per evaluated candidate, validation accuracy (resume skips them)
RUN_DIR/final/             the chosen merge (transformers and vLLM load it)
RUN_DIR/summary.json       accuracy {model: {task: value}} for base, experts, merged;
                           merge_retention; chosen; candidates
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from posttrain.core.config import ConfigError, ModelConfig, Section
from posttrain.core.data import DatasetError, load_rows, read_jsonl
from posttrain.core.models import load_causal_lm, load_tokenizer, save_hf
from posttrain.core.run_dir import FINAL_DIR, RunDir, final_output
from posttrain.phases.merging import (
    Method,
    check_compatible,
    check_tokenizer,
    load_expert_state,
    merge_state_dicts,
    merged_model,
)
from rewards.config import RewardConfig, default_reward
from rewards.scorer import Scorer
from rollouts.evaluate import hf_greedy_eval

CANDIDATES_FILE = "candidates.jsonl"


class Expert(Section):
    name: str = Field(..., description="The expert's name in the table (in a pipeline: its stage name).")
    model: str = Field(..., description="HF folder of the expert (a full model or a LoRA adapter of the base).")
    eval: str | None = Field(None, description="Held-out rows (id, prompt, answer) of the expert's task.")
    task: str | None = Field(None, description="Only the eval rows whose 'task' field is this; also the task's "
                                               "name in the table (default: the rows' task, else the expert's name).")


class Candidate(Section):
    method: Method = "task_arithmetic"
    weights: list[float] | None = Field(None, description="One per expert (default: 1 each).")
    density: float = Field(1.0, gt=0.0, le=1.0, description="ties / dare: fraction of each task vector kept.")
    majority_sign: Literal["total", "frequency"] = "total"


class MergeEval(Section):
    reward: RewardConfig = Field(default_factory=lambda: default_reward("exact", workers=1))
    validation_rows: int = Field(0, ge=0, description="This many held-out rows of each task (a seeded random "
                                 "subset) choose the candidate; the table uses the rest (0: choose on the "
                                 "table's rows).")
    max_rows: int | None = Field(200, description="Held-out rows per task in the table, after the validation "
                                                  "rows (None: all).")
    max_new_tokens: int = 16
    batch_size: int = 64


class Config(Section):
    phase: Literal["merge"] = "merge"
    model: ModelConfig = Field(default_factory=ModelConfig, description="The base the experts were trained from.")
    experts: list[Expert] = Field(default_factory=list)
    candidates: list[Candidate] = Field(default_factory=lambda: [Candidate()])
    eval: MergeEval = Field(default_factory=MergeEval)
    seed: int = Field(0, description="Seed of DARE's random drop.")


def outputs(cfg: Config, stage_dir: Path) -> dict[str, str | None]:
    return final_output(cfg, stage_dir)


def retention(merged: dict[str, float], experts: dict[str, dict[str, float]], task_of: dict[str, str]) -> float:
    """min over experts of merged[task] / expert[task] on the expert's own task (capped at 1; an expert
    at 0 accuracy counts as kept).

    >>> retention({"a": 0.45, "b": 0.9}, {"ea": {"a": 0.5}, "eb": {"b": 0.9}}, {"ea": "a", "eb": "b"})
    0.9
    """
    ratios = [1.0 if experts[e][t] <= 0 else min(1.0, merged[t] / experts[e][t]) for e, t in task_of.items()]
    return min(ratios) if ratios else 0.0


def candidate_key(rec: dict[str, Any]) -> tuple[float, float]:
    """The selection rule: retention first, then mean accuracy over the tasks."""
    acc = rec["accuracy"]
    return (round(rec["retention"], 6), round(sum(acc.values()) / max(len(acc), 1), 6))


def task_rows(e: Expert, max_rows: int | None, validation_rows: int = 0) -> tuple[str, list[dict], list[dict]]:
    """The expert's task name, its validation rows and its reported (test) rows; without validation
    rows the candidates are chosen on the test rows."""
    if not e.eval:
        raise ConfigError(f"merge: expert {e.name!r} has no eval rows; set its eval (held-out rows of its task)")
    rows = load_rows(e.eval)
    if e.task:
        rows = [r for r in rows if r.get("task") == e.task]
        if not rows:
            raise DatasetError(f"merge: expert {e.name!r}: {e.eval} has no rows with task {e.task!r}")
    task = e.task or rows[0].get("task") or e.name
    if validation_rows:  # a seeded shuffle first: a file's order may drift (e.g. longer numbers later)
        rows = random.Random(f"merge-validation:{task}").sample(rows, len(rows))
    val, test = rows[:validation_rows], rows[validation_rows:]
    if not test:
        raise DatasetError(f"merge: expert {e.name!r}: {e.eval} has {len(rows)} rows of task {task!r}, all taken "
                           f"by eval.validation_rows={validation_rows}; lower it or give more held-out rows")
    test = test[:max_rows] if max_rows else test
    return str(task), val or test, test


class TaskEval:
    """Greedy accuracy of a model on every expert's task, on the validation or the test rows (one
    reward worker pool for all)."""

    def __init__(self, cfg: Config, tokenizer: Any):
        self.cfg, self.tok = cfg, tokenizer
        split = {task: (val, test) for task, val, test in
                 (task_rows(e, cfg.eval.max_rows, cfg.eval.validation_rows) for e in cfg.experts)}
        self.tasks = list(split)
        self.rows = {"validation": {t: v for t, (v, _) in split.items()}, "test": {t: x for t, (_, x) in split.items()}}
        self.scorer = Scorer.from_config(cfg.eval.reward, max_failed_fraction=1.0)

    def __call__(self, model, split: str = "test") -> dict[str, float]:
        ev = self.cfg.eval
        model.eval()
        return {t: hf_greedy_eval(model, self.tok, rows, self.scorer, ev.max_new_tokens, ev.batch_size).accuracy
                for t, rows in self.rows[split].items()}

    def both(self, model) -> tuple[dict[str, float], dict[str, float]]:
        """(validation, test) accuracy; one evaluation when they are the same rows."""
        test = self(model, "test")
        return (test if self.cfg.eval.validation_rows == 0 else self(model, "validation")), test

    def close(self) -> None:
        self.scorer.close()


def check_config(cfg: Config) -> None:
    if not cfg.model.path:
        raise ConfigError("merge: field 'model.path' (the base the experts share) is required")
    if len(cfg.experts) < 2:
        raise ConfigError(f"merge: needs at least 2 experts, got {len(cfg.experts)}; list them under 'experts'")
    names = [e.name for e in cfg.experts]
    if len(set(names)) != len(names):
        raise ConfigError(f"merge: expert names must be distinct (got {names})")
    for i, c in enumerate(cfg.candidates):
        if c.weights is not None and len(c.weights) != len(cfg.experts):
            raise ConfigError(f"merge: candidates[{i}].weights has {len(c.weights)} values for "
                              f"{len(cfg.experts)} experts; give one weight per expert")
    if not cfg.candidates:
        raise ConfigError("merge: 'candidates' is empty; give at least one {method, weights}")


def _done_candidates(path: Path) -> list[dict[str, Any]]:
    return [obj for _, obj in read_jsonl(path)] if path.is_file() else []


def run(cfg: Config, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    t0 = time.time()
    check_config(cfg)
    run = RunDir(run_dir, "merge")
    run.write_config(cfg)
    base_path, dtype = cfg.model.path, cfg.model.dtype
    base_model = load_causal_lm(base_path, dtype)
    base = {k: v.detach().clone() for k, v in base_model.state_dict().items()}
    states = []
    for e in cfg.experts:
        state = load_expert_state(base_path, e.model, e.name, dtype)
        check_compatible(base, state, e.name)
        check_tokenizer(base_path, e.model, e.name)
        states.append(state)
    tokenizer = load_tokenizer(base_path, cfg.model.trust_remote_code)
    evaluate = TaskEval(cfg, tokenizer)
    cand_path = run.path / CANDIDATES_FILE
    try:
        accuracy = {"base": evaluate(base_model)}
        val_accuracy = {}
        for e, state in zip(cfg.experts, states):
            base_model.load_state_dict(state)
            val_accuracy[e.name], accuracy[e.name] = evaluate.both(base_model)
        task_of = {e.name: task for e, task in zip(cfg.experts, evaluate.tasks)}
        done = _done_candidates(cand_path) if resume else []
        if not resume:
            cand_path.unlink(missing_ok=True)
        for i, c in enumerate(cfg.candidates):
            if i < len(done):
                continue
            weights = c.weights or [1.0] * len(states)
            merged = merge_state_dicts(base, states, c.method, weights, c.density, c.majority_sign, cfg.seed)
            base_model.load_state_dict(merged)
            acc = evaluate(base_model, "validation")
            rec = {"index": i, **c.model_dump(), "weights": weights, "accuracy": acc,
                   "retention": retention(acc, val_accuracy, task_of)}
            with cand_path.open("a") as f:
                f.write(json.dumps(rec) + "\n")
            run.log(i, {f"merge/{t}": v for t, v in acc.items()} | {"merge/retention": rec["retention"]})
            done.append(rec)
        best = max(done, key=lambda r: (candidate_key(r), -r["index"]))
        chosen = cfg.candidates[best["index"]]
        state = merge_state_dicts(base, states, chosen.method, best["weights"], chosen.density,
                                  chosen.majority_sign, cfg.seed)
        base_model.load_state_dict(state)
        accuracy["merged"] = best["accuracy"] if cfg.eval.validation_rows == 0 else evaluate(base_model)
    finally:
        evaluate.close()
    save_hf(merged_model(base_path, state, dtype), tokenizer, run.final)
    run.log(len(cfg.candidates), {"eval/accuracy": _mean(accuracy["merged"])})
    kept = retention(accuracy["merged"], accuracy, task_of)
    summary = {"phase": "merge", "accuracy": accuracy, "merge_retention": kept,
               "tasks": task_of, "chosen": {k: best[k] for k in ("index", "method", "weights", "density")},
               "selection": {"validation_rows": cfg.eval.validation_rows, "expert_accuracy": val_accuracy,
                             "retention": best["retention"]},
               "candidates": [{k: r[k] for k in ("method", "weights", "density", "accuracy", "retention")}
                              for r in done],
               "eval/accuracy": _mean(accuracy["merged"]), "final": str(run.path / FINAL_DIR),
               "wall_seconds": round(time.time() - t0, 1)}
    run.write_summary(summary)
    return summary


def _mean(acc: dict[str, float]) -> float:
    return sum(acc.values()) / max(len(acc), 1)
