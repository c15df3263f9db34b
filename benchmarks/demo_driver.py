"""Run the demo (SFT then GSPO) for the memory workload: `posttrain demo` itself when
configs/demo/sft.yaml exists, else the same pipeline with configs/tiny/sft.yaml (the
demo's SFT config did not exist yet). Prints one JSON line: the summary and which path ran.

python -m benchmarks.demo_driver RUN_DIR [--sft key=value ...] [--rl key=value ...]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from posttrain.core.config import load_config
from posttrain.phases import sft
from posttrain.pipeline import demo
from posttrain.pipeline.demo import DEMO_CONFIGS, make_demo_data
from posttrain.rl import trainer as rl


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("run_dir")
    p.add_argument("--sft", action="append", default=[])
    p.add_argument("--rl", action="append", default=[])
    a = p.parse_args(argv)

    overrides = {"sft": a.sft, "rl": a.rl}
    if (demo.DEMO_CONFIGS / "sft.yaml").is_file():
        summary, how = demo.run_demo(a.run_dir, overrides), "posttrain demo (configs/demo/sft.yaml + rl.yaml)"
    else:
        summary, how = fallback_demo(Path(a.run_dir), overrides), "demo pipeline with configs/tiny/sft.yaml"
    print(json.dumps({"how": how, "summary": summary}))
    return 0


def fallback_demo(run_dir: Path, overrides: dict) -> dict:
    tiny = demo_root() / "configs" / "tiny" / "sft.yaml"

    train, held = make_demo_data(run_dir / "data", 8000, 200, 0)
    sft_cfg = load_config(sft.Config, tiny, [f"data.train={train}", f"data.eval={held}", *overrides["sft"]])
    sft_summary = sft.run(sft_cfg, run_dir / "sft")
    rl_cfg = load_config(rl.Config, DEMO_CONFIGS / "rl.yaml",
                         [f"model.path={run_dir / 'sft' / 'final'}", f"data.train={train}", f"data.eval={held}",
                          *overrides["rl"]])
    rl_summary = rl.run(rl_cfg, run_dir / "rl")
    summary = {**rl_summary, "sft_accuracy_hf_generate": sft_summary.get("eval/accuracy"),
               "sft_model": str(run_dir / "sft" / "final"), "eval_data": str(held), "train_data": str(train)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def demo_root() -> Path:
    return Path(__file__).resolve().parents[1]


if __name__ == "__main__":
    sys.exit(main())
