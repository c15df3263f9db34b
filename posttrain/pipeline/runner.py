"""`posttrain pipeline`: a multi-stage recipe (SFT, MPO, RL, RFT, filter, alignment)
from one config, resumable, with a run report.

The shipped recipe (configs/recipes/keye.yaml) is Keye-VL 1.5's iterative schedule
SFT -> RL -> (RFT -> SFT) -> filter -> RL. Stage configs and wiring: posttrain/pipeline_config.py.

RUN_DIR/pipeline.yaml        the pipeline config as given (--resume reads it)
RUN_DIR/pipeline_state.json  per stage: status (running/interrupted/failed/done), config hash,
                             attempts, wall time, summary; written atomically
RUN_DIR/<stage>/             each stage's own run directory (phase contract)
RUN_DIR/summary.json         stages [{name, kind, accuracy, model, dtype, dtype_reason}] in run order
                             (dtype: {trainer, engine} as computed, `auto` decided), sft_model,
                             final_model, eval_data, wall_s, and the first RL stage's
                             accuracy_before_rl / accuracy_after_rl / rl_wall_s
RUN_DIR/report.html, RUN_DIR/tensorboard/   (posttrain/report.py)

Resume: a done stage whose config hash is unchanged is skipped; a running or
interrupted one resumes through its phase's own resume (checkpoints); a changed config
of a done or started stage is refused unless --force, which reruns it (and, through the
chained hashes, every stage downstream of it) from scratch.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from posttrain.core.config import ConfigError
from posttrain.core.data import DatasetError, write_jsonl
from posttrain.core.run_dir import INIT_MODEL_DIR, SCORED_FILE, atomic_write_text
from posttrain.phases import PHASES
from posttrain.phases.pairs import build_pairs
from posttrain.pipeline.config import (Config, Resolved, dump_pipeline_config, resolve, stage_precision,
                                       with_data_defaults)
from posttrain.pipeline.report import write_report
from posttrain.tasks.addition import make_demo_data
from posttrain.tasks.cot_addition import make_cot_data
from posttrain.tasks.reversal import make_experts_data
from posttrain.tasks.tiny_vision import make_tiny_from_config
from posttrain.tasks.visual import make_visual_demo_data

log = logging.getLogger(__name__)
STATE_FILE, CONFIG_FILE = "pipeline_state.json", "pipeline.yaml"


class PipelineInterrupted(RuntimeError):
    """A stage stopped early (SIGTERM/SIGINT after a checkpoint); `--resume` continues it."""


class PipelineState:
    """RUN_DIR/pipeline_state.json: {"stages": {name: record}}, rewritten atomically on every change."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / STATE_FILE
        self.stages: dict[str, dict[str, Any]] = {}
        if self.path.is_file():
            self.stages = json.loads(self.path.read_text()).get("stages", {})

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps({"stages": self.stages}, indent=2, default=str) + "\n")

    def start(self, st: Resolved, fresh: bool) -> dict[str, Any]:
        rec = {} if fresh else dict(self.stages.get(st.name, {}))
        if rec.get("status") == "running" and rec.get("started_at"):  # killed: count up to its last write
            last = max((p.stat().st_mtime for p in st.dir.rglob("*") if p.is_file()), default=rec["started_at"])
            rec["wall_s"] = round(rec.get("wall_s", 0.0) + max(0.0, last - rec["started_at"]), 2)
        rec.update(kind=st.kind, hash=st.hash, status="running", attempts=rec.get("attempts", 0) + 1,
                   dir=str(st.dir), started_at=round(time.time(), 3))
        rec.setdefault("wall_s", 0.0)
        self.stages[st.name] = rec
        self.save()
        return rec

    def finish(self, st: Resolved, status: str, summary: dict[str, Any] | None, wall: float,
               cpu: float = 0.0) -> None:
        """`cpu_s`: this process's CPU seconds (not Ray workers'): on a shared machine, a truer cost than wall."""
        rec = self.stages[st.name]
        rec.update(status=status, wall_s=round(rec.get("wall_s", 0.0) + wall, 2),
                   cpu_s=round(rec.get("cpu_s", 0.0) + cpu, 2), outputs=st.outputs)
        if summary is not None:
            rec["summary"] = summary
        self.stages[st.name] = rec
        self.save()


def changed_stages(plan: list[Resolved], state: PipelineState) -> list[str]:
    """Stages already started or done whose resolved config (or an upstream one) changed."""
    return [st.name for st in plan if st.name in state.stages and state.stages[st.name].get("hash") != st.hash]


def check_changes(plan: list[Resolved], state: PipelineState, force: bool) -> None:
    changed = changed_stages(plan, state)
    if changed and not force:
        raise ConfigError(f"the config of stage(s) {', '.join(changed)} changed since they ran in "
                          f"{state.path.parent} (an upstream change counts too); pass --force to rerun them "
                          f"from scratch, or undo the change")


def stage_accuracy(kind: str, summary: dict[str, Any]) -> float | None:
    for key in ("accuracy_after_rl", "eval/accuracy"):
        if summary.get(key) is not None:
            return summary[key]
    return None


def prepare_inputs(pipe: Config, run_dir: Path, st: Resolved) -> None:
    """Files a stage needs that the pipeline makes: the demo task, the tiny model, MPO pairs."""
    train = Path(pipe.data.train)
    if not train.is_file() and train.parent == run_dir / "data":
        make = {"experts": make_experts_data, "cot": make_cot_data,
                "visual-quadrants": make_visual_demo_data}.get(pipe.data.demo_task, make_demo_data)
        make(run_dir / "data", pipe.data.demo_train_rows, pipe.data.demo_eval_rows, pipe.data.seed)
    if st.tiny_init and not (run_dir / INIT_MODEL_DIR / "config.json").is_file():
        m, tmp = st.cfg.model, run_dir / ".init_model.tmp"
        shutil.rmtree(tmp, ignore_errors=True)  # built aside, then renamed: a kill never leaves half a model
        make_tiny_from_config(m, pipe.data.train, tmp)
        tmp.rename(run_dir / INIT_MODEL_DIR)
    if "pairs" in st.sources:
        pairs, _ = build_pairs(run_dir / st.sources["pairs"] / SCORED_FILE)
        write_jsonl(st.cfg.data.train, pairs)


def say(msg: str) -> None:
    print(f"[pipeline] {msg}", file=sys.stderr, flush=True)


def run_stage(st: Resolved, resume: bool) -> dict[str, Any]:
    return PHASES[st.kind].load().run(st.cfg, st.dir, resume=resume)


def run_pipeline(pipe: Config, run_dir: str | Path, force: bool = False) -> dict[str, Any]:
    """Run (or continue) the recipe in RUN_DIR; returns the pipeline summary."""
    run_dir = Path(run_dir).resolve()
    pipe = with_data_defaults(pipe, run_dir)
    plan = resolve(pipe, run_dir)
    state = PipelineState(run_dir)
    check_changes(plan, state, force)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, dump_pipeline_config(pipe))
    tiny_stale = force and any(st.tiny_init and st.name in changed_stages(plan, state) for st in plan)
    if tiny_stale:  # a forced rerun of the first stage rebuilds the initial model too
        shutil.rmtree(run_dir / INIT_MODEL_DIR, ignore_errors=True)
    for st in plan:
        rec = state.stages.get(st.name)
        if rec and rec.get("hash") == st.hash and rec.get("status") == "done":
            say(f"stage {st.name} ({st.kind}): done earlier, skipped")
            continue
        fresh = rec is None or rec.get("hash") != st.hash
        if fresh:
            shutil.rmtree(st.dir, ignore_errors=True)  # a forced rerun starts from nothing
        prepare_inputs(pipe, run_dir, st)
        state.start(st, fresh)
        t0, c0 = time.monotonic(), time.process_time()
        say(f"stage {st.name} ({st.kind}): {'starting' if fresh else 'resuming from its checkpoint'} in {st.dir}")
        try:
            summary = run_stage(st, resume=not fresh)
        except (ConfigError, DatasetError) as e:  # bad input found while running: name the stage
            state.finish(st, "failed", None, time.monotonic() - t0, time.process_time() - c0)
            raise type(e)(f"stage {st.name!r} ({st.kind}): {e}") from None
        if summary.get("interrupted"):
            state.finish(st, "interrupted", summary, time.monotonic() - t0, time.process_time() - c0)
            raise PipelineInterrupted(f"stage {st.name!r} stopped at step {summary.get('steps')}; continue with "
                                      f"`posttrain pipeline --resume {run_dir}`")
        state.finish(st, "done", summary, time.monotonic() - t0, time.process_time() - c0)
    summary = pipeline_summary(pipe, plan, state)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    if pipe.report:
        try:
            write_report(run_dir)
        except Exception as e:  # the run's results are written; a plotting problem must not fail it
            say(f"report failed (regenerate with `posttrain report {run_dir}`): {type(e).__name__}: {e}")
    return summary


def stage_dtypes(st: Resolved, summary: dict[str, Any]) -> dict[str, dict[str, str]]:
    """{"dtype": {role: dtype}, "dtype_reason": {role: reason}} of a stage: what its own summary
    recorded (`trainer/dtype`, `engine/dtype`), else its config's choice on this machine."""
    dtype, reason = {}, {}
    for role, choice in stage_precision(st.kind, st.cfg).items():
        dtype[role] = summary.get(f"{role}/dtype", choice.dtype)
        reason[role] = summary.get(f"{role}/dtype_reason", choice.reason)
    return {"dtype": dtype, "dtype_reason": reason}


def pipeline_summary(pipe: Config, plan: list[Resolved], state: PipelineState) -> dict[str, Any]:
    stages, acc_by_model, walls = [], {}, {}
    for st in plan:
        rec = state.stages[st.name]
        s = rec.get("summary", {})
        model = st.outputs["model"]
        acc = stage_accuracy(st.kind, s)
        if st.kind == "filter":  # trains nothing: its model keeps the accuracy it had
            acc = acc_by_model.get(model)
        acc_by_model[model] = acc
        stages.append({"name": st.name, "kind": st.kind, "accuracy": acc, "model": model, **stage_dtypes(st, s)})
        walls[st.name] = rec.get("wall_s")
    merge = next((st for st in reversed(plan) if st.kind == "merge"), None)
    merge_sum = state.stages[merge.name].get("summary", {}) if merge else {}
    first_sft = next((s for s in stages if s["kind"] == "sft"), None)
    first_rl = next((st for st in plan if st.kind == "rl"), None)
    rl_sum = state.stages[first_rl.name].get("summary", {}) if first_rl else {}
    return {
        "stages": stages,
        "sft_model": first_sft["model"] if first_sft else None,
        "final_model": stages[-1]["model"],
        "eval_data": pipe.data.eval,
        "train_data": pipe.data.train,
        "accuracy_before_rl": rl_sum.get("accuracy_before_rl"),
        "accuracy_after_rl": rl_sum.get("accuracy_after_rl"),
        "rl_wall_s": rl_sum.get("rl_wall_s"),
        "sft_accuracy_hf_generate": first_sft["accuracy"] if first_sft else None,
        "sft_wall_s": walls.get(first_sft["name"]) if first_sft else None,
        "stage_wall_s": walls,
        "wall_s": round(sum(w or 0.0 for w in walls.values()), 1),
        **({"accuracy": merge_sum.get("accuracy"), "merge_retention": merge_sum.get("merge_retention")}
           if merge else {}),  # the last merge stage's table {model: {task: value}}
    }


def print_summary(summary: dict[str, Any]) -> None:
    print(json.dumps(summary, indent=2))
    print("\nheld-out greedy accuracy after each stage:")
    for s in summary["stages"]:
        acc = "n/a" if s["accuracy"] is None else f"{s['accuracy']:.1%}"
        dtypes = ", ".join(f"{role} {d}" for role, d in (s.get("dtype") or {}).items())
        print(f"  {s['name']:<12} {s['kind']:<7} {acc:>7}   ({summary['stage_wall_s'].get(s['name'], 0):.0f} s)"
              + (f"   {dtypes}" if dtypes else ""))
    if summary.get("accuracy"):
        tasks = sorted({t for accs in summary["accuracy"].values() for t in accs})
        print("\nheld-out accuracy by model and task:\n  " + f"{'model':<14}" + "".join(f"{t:>12}" for t in tasks))
        for m, accs in summary["accuracy"].items():
            print(f"  {m:<14}" + "".join(f"{accs.get(t, float('nan')):>12.1%}" for t in tasks))
        print(f"merge retention (min merged/expert on the expert's task): {summary['merge_retention']:.3f}")
    print(f"total {summary['wall_s']:.0f} s; final model {summary['final_model']}")
