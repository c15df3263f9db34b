"""Learning holds in bf16: one demo SFT (fp32), then GSPO from it in fp32 and in bf16 (trainer + engine)."""
import json, sys, time
from pathlib import Path
from posttrain.core.config import load_config
from posttrain.phases import sft
from posttrain.rl import trainer as rl
from posttrain.pipeline.demo import DEMO_CONFIGS
from posttrain.tasks.addition import make_demo_data

if __name__ == "__main__":
    out = Path(sys.argv[1]); steps = sys.argv[2]; backend = sys.argv[3]; order = sys.argv[4].split(",")
    train, held = make_demo_data(out / "data", 9000, 200, 0)
    if not (out / "sft" / "final").is_dir():
        cfg = load_config(sft.Config, DEMO_CONFIGS / "sft.yaml", [f"data.train={train}", f"data.eval={held}", "model.dtype=float32"])
        print("SFT", json.dumps(sft.run(cfg, out / "sft")), flush=True)
    for dt in order:
        t = time.time()
        cfg = load_config(rl.Config, DEMO_CONFIGS / "rl.yaml", [f"model.path={out/'sft'/'final'}", f"data.train={train}", f"data.eval={held}",
              f"model.dtype={dt}", f"engine.dtype={dt}", f"train.steps={steps}", "eval.every=0", "train.checkpoint_every=0",
              f"rollout.backend={backend}", "hints.enabled=false"])
        s = rl.run(cfg, out / f"rl-{dt}")
        print(f"RESULT {dt}: before {s['accuracy_before_rl']} after {s['accuracy_after_rl']} wall {s['rl_wall_s']} "
              f"trainer {s['trainer/dtype']} engine {s['engine/dtype']} ({time.time()-t:.0f}s)", flush=True)
