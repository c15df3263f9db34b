"""`make cot-demo`: the LongCoT recipe (configs/recipes/cot.yaml) and the check that its
filtering pays: SFT on the pipeline's file vs SFT on the unfiltered k paths, equal steps.

1. the task: 2-digit addition with reference reasoning paths (tasks/cot_addition.py):
   RUN_DIR/data/train.jsonl (the teacher's SFT rows), eval.jsonl (held out), pool.jsonl
   (prompts for the data pipeline, disjoint from both);
2. the recipe: teacher SFT (stopped at partial competence) -> cot (k paths from the
   teacher, judged, auto review, scored, upsampled) -> student SFT on the cot file;
3. `student_unfiltered`: the student's config and steps, on every one of the k paths
   (RUN_DIR/cot/unfiltered_sft.jsonl) instead;
4. RUN_DIR/summary.json: the pipeline summary plus `comparison` {filtered, unfiltered,
   teacher}: held-out greedy accuracy (final answer right), rows and steps of each.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from posttrain.core.config import build_config
from posttrain.core.run_dir import atomic_write_text
from posttrain.phases import sft
from posttrain.pipeline.config import load_pipeline_config, resolve, with_data_defaults
from posttrain.pipeline.runner import run_pipeline

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "recipes" / "cot.yaml"


def run_demo(run_dir: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    run_dir = Path(run_dir).resolve()
    t0 = time.monotonic()
    pool = run_dir / "data" / "pool.jsonl"
    pipe = load_pipeline_config(RECIPE, [f"stages.cot.values.data.sources={pool}", *overrides])
    summary = run_pipeline(pipe, run_dir)
    student = {st.name: st for st in resolve(with_data_defaults(pipe, run_dir), run_dir)}["student"]
    cot = json.loads((run_dir / "cot" / "summary.json").read_text())
    raw_cfg = build_config(sft.Config, {**student.cfg.model_dump(mode="json"),
                                        "data": {**student.cfg.data.model_dump(mode="json"),
                                                 "train": cot["unfiltered_sft_data"]}}, "student_unfiltered")
    raw_dir = run_dir / "student_unfiltered"
    done = raw_dir / "summary.json"
    raw = json.loads(done.read_text()) if done.is_file() else sft.run(raw_cfg, raw_dir)
    filt = json.loads((run_dir / "student" / "summary.json").read_text())
    teacher = json.loads((run_dir / "teacher" / "summary.json").read_text())
    summary["comparison"] = {
        "teacher": {"accuracy": teacher["eval/accuracy"], "steps": teacher["steps"]},
        "filtered": {"accuracy": filt["eval/accuracy"], "rows": filt["train_rows"], "steps": filt["steps"],
                     "data": cot["sft_data"]},
        "unfiltered": {"accuracy": raw["eval/accuracy"], "rows": raw["train_rows"], "steps": raw["steps"],
                       "data": cot["unfiltered_sft_data"]},
        "cot_counts": cot["counts"],
    }
    summary["demo_wall_s"] = round(time.monotonic() - t0, 1)
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/cot-demo")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the recipe")
    args = p.parse_args(argv)
    c = run_demo(args.run_dir, args.overrides)["comparison"]
    print(json.dumps(c, indent=2))
    print(f"\nheld-out accuracy: teacher {c['teacher']['accuracy']:.1%}; student on the cot file "
          f"{c['filtered']['accuracy']:.1%} vs on the unfiltered k paths {c['unfiltered']['accuracy']:.1%} "
          f"({c['filtered']['steps']} SFT steps each)")


if __name__ == "__main__":
    main()
