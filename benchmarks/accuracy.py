"""Workload `accuracy`: held-out accuracy gain after equal wall time, posttrain's GSPO vs
TRL's GSPO, from one SFT checkpoint of the demo task, same seed and rollout settings
(configs/demo/rl.yaml: 32 prompts x 8 samples, 8 new tokens, lr 1e-4, clip 3e-4/4e-4,
4 minibatches).

Both run in one process and alternate: after each TRL optimizer step, posttrain steps
until its training clock catches up with TRL's. Each clock counts only training time
(generate, score, update, sync); evaluation pauses it. Both are evaluated by the same
function (HF greedy decoding of the policy in this process, exact match) every
`acc_eval_every_s` of their own clock. Repeats reuse one vLLM engine (weights reset to
the SFT checkpoint) to save its start-up.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from posttrain.rl.policy_losses import POLICY_LOSSES
from rollouts.evaluate import hf_greedy_eval

import rollouts.factory as factory
from benchmarks import pt_side, trl_side
from benchmarks.common import Sizes, log
from benchmarks.stats import loadavg, ratio_stats
from posttrain.core.config import load_config
from posttrain.core.data import load_rows
from posttrain.phases import sft
from posttrain.pipeline.demo import DEMO_CONFIGS, make_demo_data
from rewards.builtin.exact import exact_match

ROOT = Path(__file__).resolve().parents[1]


def find_sft(out: Path, sizes: Sizes, quick: bool, given: str | None = None) -> dict[str, Any]:
    """The demo's SFT checkpoint and its data: `--sft DIR` (DIR/final, DIR/train.jsonl,
    DIR/eval.jsonl), else runs/demo, else the memory workload's demo run, else train one
    here (steps capped)."""
    if given:
        base = Path(given)
        if not (base / "final" / "config.json").is_file() or not (base / "eval.jsonl").is_file():
            raise FileNotFoundError(f"--sft {base}: expected {base}/final (HF folder), train.jsonl, eval.jsonl")
        return {"sft": str(base / "final"), "train": str(base / "train.jsonl"), "eval": str(base / "eval.jsonl"),
                "source": f"--sft {base}"}
    for base, how in ((ROOT / "runs" / "demo", "runs/demo (make demo)"),
                      (out.parent / "memory" / "demo", "the memory workload's demo run")):
        final, data = base / "sft" / "final", base / "data"
        if (final / "config.json").is_file() and (data / "eval.jsonl").is_file() and not quick:
            return {"sft": str(final), "train": str(data / "train.jsonl"), "eval": str(data / "eval.jsonl"),
                    "source": how}

    base = out / "sft_run"
    train, held = make_demo_data(base / "data", 8000, 200, 0)
    final = base / "sft" / "final"
    yaml = DEMO_CONFIGS / "sft.yaml"
    if not yaml.is_file():
        yaml = ROOT / "configs" / "tiny" / "sft.yaml"
    if not (final / "config.json").is_file():
        cfg = load_config(sft.Config, yaml, [f"data.train={train}", f"data.eval={held}", "eval.every=0"])
        if cfg.train.max_steps > sizes.acc_sft_max_steps:
            cfg.train.max_steps = sizes.acc_sft_max_steps
        log(f"accuracy: training the SFT checkpoint ({yaml.name}, {cfg.train.max_steps} steps)")
        sft.run(cfg, base / "sft")
    return {"sft": str(final), "train": str(train), "eval": str(held),
            "source": f"trained here with {yaml.relative_to(ROOT)} (max_steps <= {sizes.acc_sft_max_steps})"}


class SharedPool:
    """Lends one generator to successive trainers; close() is deferred to the end."""

    def __init__(self) -> None:
        self.inner: Any = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def close(self) -> None:
        pass


def shared_trainer(cfg: Any, run_dir: Path, shared: SharedPool) -> Any:
    """posttrain's trainer on the one engine of this workload (started by the first trainer, then
    reset to the trainer's starting weights), so repeats and variants do not pay its start-up."""
    if shared.inner is not None:
        orig = factory.make_generator
        factory.make_generator = lambda *a, **k: shared
        try:
            pt = pt_side.make_trainer(cfg, run_dir, force_length=False)
        finally:
            factory.make_generator = orig
        pt.generator.update_weights(pt.model.state_dict(), 0)
    else:
        pt = pt_side.make_trainer(cfg, run_dir, force_length=False)
        shared.inner = pt.generator.inner
        pt.generator.inner = shared
    return pt


def run(out: Path, sizes: Sizes, quick: bool = False, sft: str | None = None) -> tuple[dict, dict]:
    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    src = find_sft(out, sizes, quick, sft)
    eval_rows = load_rows(src["eval"])[: sizes.acc_eval_rows]
    train_rows = load_rows(src["train"])
    shared = SharedPool()
    repeats = []
    try:
        for r in range(sizes.repeats):
            repeats.append(one_repeat(out / f"repeat{r}", src, train_rows, eval_rows, sizes, shared))
    finally:
        if shared.inner is not None:
            shared.inner.close()
    gains = [x["ratio"] for x in repeats]
    headline = ratio_stats("time_to_accuracy_gain_vs_trl", gains)
    details = {**src, "budget_s": sizes.acc_budget_s, "eval_every_s": sizes.acc_eval_every_s,
               "eval_rows": len(eval_rows), "repeats": repeats}
    return headline, details


def one_repeat(out: Path, src: dict, train_rows: list, eval_rows: list, sizes: Sizes, shared: SharedPool,
               cfg: Any = None, trl_reward: Any = exact_match, measure: Any = None) -> dict:
    """One race from src["sft"]: posttrain with `cfg` (default: the demo's GSPO settings, exact match)
    against TRL with the same settings and `trl_reward`, each measured by `measure(model, tok)`
    (default: posttrain's eval reward over greedy completions of `eval_rows`)."""
    from transformers import TrainerCallback

    budget, every = sizes.acc_budget_s, sizes.acc_eval_every_s
    cfg = cfg or pt_side.gspo_config(src["sft"], src["train"], None, None, None, None, "exact")
    pt = shared_trainer(cfg, out / "posttrain", shared)
    tok = pt.tok
    max_new = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens

    def acc(model: Any) -> float:
        if measure is not None:
            return measure(model, tok)
        return hf_greedy_eval(model, tok, eval_rows, pt.eval_scorer, max_new_tokens=max_new, batch_size=100).accuracy

    acc0 = acc(pt.model)
    st = {"pt_clock": 0.0, "trl_clock": 0.0, "pt_next": every, "trl_next": every, "pt_steps": 0}
    pt_curve, trl_curve = [(0.0, acc0)], [(0.0, acc0)]

    def pt_step() -> None:
        t = time.perf_counter()
        pt.train_step(st["pt_steps"])
        st["pt_clock"] += time.perf_counter() - t
        st["pt_steps"] += 1
        if st["pt_clock"] >= st["pt_next"] or st["pt_clock"] >= budget:
            pt_curve.append((round(st["pt_clock"], 2), acc(pt.model)))
            st["pt_next"] += every

    holder: list[Any] = []

    class Alternate(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            st["trl_clock"] += time.perf_counter() - self.t0
            if st["trl_clock"] >= st["trl_next"] or st["trl_clock"] >= budget:
                trl_curve.append((round(st["trl_clock"], 2), acc(holder[0].model)))
                st["trl_next"] += every
            while st["pt_clock"] < min(st["trl_clock"], budget):
                pt_step()
            if st["trl_clock"] >= budget:
                control.should_training_stop = True
            self.t0 = time.perf_counter()

    r = cfg.rollout
    settings = {**POLICY_LOSSES.get(cfg.algo.loss).settings, **cfg.algo.loss_args}
    clip = (settings["eps_low"], settings["eps_high"])
    tcfg = trl_side.gspo_config(out / "trl", r.prompts_per_step, r.group_size, r.max_new_tokens, cfg.optim.lr,
                                100000, cfg.algo.num_minibatches, *clip,
                                seed=cfg.train.seed, temperature=r.temperature)
    reward = trl_side.TokenCounter(trl_reward)
    load0 = loadavg()[:1]
    try:
        trainer = trl_side.make_trainer(src["sft"], train_rows, reward, tcfg, [Alternate()])
        holder.append(trainer)
        trainer.train()
        while st["pt_clock"] < budget:
            pt_step()
        trl_steps = trainer.state.global_step
    finally:
        pt.close()
    pt_final, trl_final = pt_curve[-1][1], trl_curve[-1][1]
    pt_gain, trl_gain = pt_final - acc0, trl_final - acc0
    rec = {"sft_accuracy": acc0, "posttrain_final": pt_final, "trl_final": trl_final, "posttrain_gain": pt_gain,
           "trl_gain": trl_gain, "ratio": pt_gain / trl_gain if trl_gain > 0 else None,
           "posttrain_steps": st["pt_steps"], "trl_optimizer_steps": trl_steps,
           "trl_rollout_steps": trl_steps / cfg.algo.num_minibatches,
           "posttrain_s_to_trl_final": first_time(pt_curve, trl_final),
           "trl_s_to_trl_final": first_time(trl_curve, trl_final),
           "posttrain_curve": pt_curve, "trl_curve": trl_curve, "loadavg_1m": load0 + loadavg()[:1]}
    log(f"accuracy repeat: SFT {acc0:.3f} -> posttrain {pt_final:.3f} ({st['pt_steps']} steps), "
        f"TRL {trl_final:.3f} ({trl_steps / cfg.algo.num_minibatches:.0f} steps) in {budget:.0f}s each; "
        f"gain ratio {rec['ratio']}")
    (out / "curves.json").write_text(json.dumps(rec, indent=2))
    return rec


def first_time(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first clock reading at which the curve reaches `target` (None if never)."""
    for t, a in curve:
        if a >= target - 1e-9:
            return t
    return None
