"""`posttrain demo`: the short demo (the first two stages of `make demo`'s pipeline), offline.

addition task -> tiny model (tokenizer trained on the task) -> SFT (TRL) -> GSPO
(vLLM engines in Ray actors) -> held-out greedy accuracy before/after RL, written
to RUN_DIR/summary.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from posttrain.core.config import load_config
from posttrain.core.run_dir import FINAL_DIR, RunDir
from posttrain.phases import sft
from posttrain.rl import trainer as rl
from posttrain.tasks.addition import make_demo_data

DEMO_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "demo"


def run_demo(run_dir: str | Path, overrides: dict[str, list[str]] | None = None, n_train: int = 9000,
             n_eval: int = 200, seed: int = 0) -> dict[str, Any]:
    overrides = overrides or {}
    run = RunDir(run_dir, "demo")
    t0 = time.monotonic()
    train, held = make_demo_data(run.path / "data", n_train, n_eval, seed)
    sft_cfg = load_config(sft.Config, DEMO_CONFIGS / "sft.yaml",
                          [f"data.train={train}", f"data.eval={held}", *overrides.get("sft", [])])
    sft_summary = sft.run(sft_cfg, run.path / "sft")
    sft_model = str(run.path / "sft" / FINAL_DIR)
    rl_cfg = load_config(rl.Config, DEMO_CONFIGS / "rl.yaml",
                         [f"model.path={sft_model}", f"data.train={train}", f"data.eval={held}",
                          *overrides.get("rl", [])])
    rl_summary = rl.run(rl_cfg, run.path / "rl")
    summary = {
        "accuracy_before_rl": rl_summary["accuracy_before_rl"],
        "accuracy_after_rl": rl_summary["accuracy_after_rl"],
        "rl_wall_s": rl_summary["rl_wall_s"],
        "sft_accuracy_hf_generate": sft_summary.get("eval/accuracy"),
        "sft_wall_s": sft_summary.get("wall_seconds"),
        "sft_model": sft_model,
        "final_model": rl_summary["final_model"],
        "eval_data": str(held),
        "train_data": str(train),
        "wall_s": round(time.monotonic() - t0, 1),
    }
    run.write_summary(summary)
    return summary


def print_summary(summary: dict[str, Any]) -> None:
    before, after = summary["accuracy_before_rl"], summary["accuracy_after_rl"]
    print(json.dumps(summary, indent=2))
    if before is not None and after is not None:
        print(f"\nheld-out greedy accuracy: SFT {before:.1%} -> GSPO {after:.1%} "
              f"({(after - before) * 100:+.1f} points, RL took {summary['rl_wall_s']:.0f} s)")
