"""SFT steps/s in fp32 and bf16 side by side: the demo's SFT config (configs/demo/sft.yaml), same
data, init model and seed, short runs alternating between the dtypes in one process, so both see
the same machine load. Reports wall and CPU (process_time) seconds per step, warm-up steps dropped.

    python scripts/precision/sft_speed.py RUN_DIR [steps=40] [rounds=3] [dtypes=float32,bfloat16]

RUN_DIR holds data/train.jsonl, data/eval.jsonl and init_model/ (a demo run's, e.g. copied from
runs/demo); results go to RUN_DIR/sft_speed.json.
"""
import json
import os
import statistics
import sys
import time
from pathlib import Path

from transformers import TrainerCallback

from posttrain.core.config import load_config
from posttrain.core.run_dir import RunDir
from posttrain.phases import sft
from posttrain.phases.trl_common import Evaluator
from posttrain.pipeline.demo import DEMO_CONFIGS

WARMUP = 5  # first steps: kernel creation (oneDNN builds its bf16 kernels on first use), allocator growth


class StepClock(TrainerCallback):
    def __init__(self):
        self.wall, self.cpu = [], []

    def on_step_begin(self, args, state, control, **kw):
        self._t, self._c = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kw):
        self.wall.append(time.perf_counter() - self._t)
        self.cpu.append(time.process_time() - self._c)


def one_run(root: Path, dtype: str, steps: int, tag: str) -> dict:
    ov = [f"data.train={root / 'data' / 'train.jsonl'}", "data.eval=null", "model.init=path",
          f"model.path={root / 'init_model'}", f"model.dtype={dtype}", f"train.max_steps={steps}",
          "train.save_steps=100000", "train.logging_steps=100000", "eval.stop_at_accuracy=null", "eval.every=0"]
    cfg = load_config(sft.Config, DEMO_CONFIGS / "sft.yaml", ov)
    run = RunDir(root / "runs" / tag, "sft")
    run.start(cfg, False)
    ds = sft.build_train_dataset(cfg.data, None, cfg.train.max_length)
    trainer = sft.make_trainer(cfg, run, str(root / "init_model"), ds, Evaluator(cfg.eval, []))
    clock = StepClock()
    trainer.add_callback(clock)
    trainer.train()
    w, c = clock.wall[WARMUP:], clock.cpu[WARMUP:]
    return {"dtype": dtype, "steps_timed": len(w), "wall_s_per_step": statistics.median(w),
            "cpu_s_per_step": statistics.median(c), "steps_per_s": 1 / statistics.median(w),
            "wall_s_per_step_last_half": statistics.median(w[len(w) // 2:]), "load_1min": os.getloadavg()[0],
            "wall_s_each": [round(x, 3) for x in clock.wall]}


if __name__ == "__main__":
    root = Path(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    dtypes = (sys.argv[4] if len(sys.argv) > 4 else "float32,bfloat16").split(",")
    out = []
    for r in range(rounds):
        for dt in dtypes if r % 2 == 0 else dtypes[::-1]:
            res = {"round": r, **one_run(root, dt, steps, f"r{r}-{dt}")}
            print(json.dumps(res), flush=True)
            out.append(res)
    (root / "sft_speed.json").write_text(json.dumps(out, indent=1))
