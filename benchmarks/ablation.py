"""Workload `ablation`: held-out accuracy gain per second of posttrain's GSPO with and without
each of issue 16's features, from the accuracy workload's SFT checkpoint and demo settings.

Variants run one after another on one vLLM engine (reset to the SFT weights each time), each
for the same training wall-time budget (evaluation excluded: its clock pauses), evaluated by
the same HF greedy evaluator as the accuracy workload every `acc_eval_every_s`. A row's
`gain_per_min` is the final held-out gain over the training time, per minute (results.json:
details.ablation.variants).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import accuracy_long, pt_side
from benchmarks.accuracy import SharedPool, find_sft, shared_trainer
from benchmarks.common import Sizes, log
from benchmarks.model import addition_rows
from benchmarks.rewards_fn import digit_rich
from benchmarks.stats import loadavg
from posttrain.core.data import load_rows, write_jsonl
from rollouts.evaluate import hf_greedy_eval

VARIANTS: dict[str, list[str]] = {
    "baseline": [],
    "dynamic_sampling": ["dynamic_sampling.enabled=true", "dynamic_sampling.max_rounds=3"],
    "staleness1_tis": ["rollout.max_staleness=1", "off_policy.mode=tis"],
    "staleness1_no_correction": ["rollout.max_staleness=1", "off_policy.mode=none"],
    "overlong_mask": ["overlong.mode=mask"],
    "all": ["dynamic_sampling.enabled=true", "rollout.max_staleness=1", "off_policy.mode=tis",
            "overlong.mode=mask"],
}


def run(out: Path, sizes: Sizes, quick: bool = False, sft: str | None = None,
        variants: list[str] | None = None, task: str = "demo") -> tuple[dict, dict]:
    """`task`: demo (the accuracy workload's SFT checkpoint, exact match, 8 tokens), long
    (the accuracy_long workload: 27M model, 64 tokens, digit_share) or tiny (`tiny_setup`)."""
    torch.set_num_threads(1 if task == "tiny" else 2)  # tiny: one thread is faster for 0.6M (and the load)
    out = out / task
    out.mkdir(parents=True, exist_ok=True)
    if task == "tiny":
        src = tiny_setup(out)
        make_cfg = lambda extra: pt_side.gspo_config(  # noqa: E731
            src["sft"], src["train"], 16, 8, 8, 1e-3, TINY_REWARD, extra=["rollout.backend=hf", *extra])
        measure = lambda model, tok: accuracy_long.sampled_reward(model, tok, eval_rows, 8,  # noqa: E731
                                                                  reward=digit_rich)
    elif task == "long":
        src = accuracy_long.setup(out.parent.parent / "accuracy_long", sizes, quick)
        make_cfg = lambda extra: accuracy_long.config(src, extra)  # noqa: E731
        measure = lambda model, tok: accuracy_long.sampled_reward(model, tok, eval_rows, src["new_tokens"])  # noqa
    else:
        src = find_sft(out.parent.parent / "accuracy", sizes, quick, sft)  # the accuracy workload's checkpoint
        make_cfg = lambda extra: pt_side.gspo_config(src["sft"], src["train"], None, None, None, None,  # noqa: E731
                                                     "exact", extra=extra)
        measure = None
    eval_rows = load_rows(src["eval"])[: sizes.acc_eval_rows]
    names = variants or list(VARIANTS)
    shared = SharedPool()
    rows = []
    try:
        for name in names:
            cfg = make_cfg(VARIANTS[name] + [f"train.steps={10 ** 6}"])
            rows.append(one_variant(out / name, name, cfg, eval_rows, sizes, shared, measure))
    finally:
        if shared.inner is not None:
            shared.inner.close()
    return {}, {**src, "task": task, "budget_s": sizes.acc_budget_s, "eval_rows": len(eval_rows), "variants": rows}


TINY_REWARD = "benchmarks.rewards_fn:digit_rich"


def tiny_setup(out: Path) -> dict:
    """A random-init 0.6M Qwen2 (hidden 128, 4 layers) and the bench's addition prompts: runs in
    seconds per step on the in-process HF generator, no engine and no SFT needed."""
    from posttrain.tasks.tiny import make_tiny_model

    write_jsonl(out / "train.jsonl", addition_rows(2000, seed=5))
    write_jsonl(out / "eval.jsonl", addition_rows(50, seed=6))
    model = out / "model"
    if not (model / "config.json").is_file():
        make_tiny_model(out / "train.jsonl", model, hidden=128, layers=4, heads=4, head_dim=32, seed=0)
    return {"sft": str(model), "train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl"),
            "source": "a random-init tiny Qwen2 (hidden 128, 4 layers), HF backend, 16 prompts x 8 x 8 tokens, "
                      f"lr 1e-3, reward {TINY_REWARD} (sampled mean)"}


def one_variant(out: Path, name: str, cfg: Any, eval_rows: list, sizes: Sizes, shared: SharedPool,
                measure: Any = None) -> dict:
    pt = shared_trainer(cfg, out / "posttrain", shared)
    max_new = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens

    def acc() -> float:
        if measure is not None:
            return measure(pt.model, pt.tok)
        return hf_greedy_eval(pt.model, pt.tok, eval_rows, pt.eval_scorer, max_new_tokens=max_new,
                              batch_size=100).accuracy

    budget, every = sizes.acc_budget_s, sizes.acc_eval_every_s
    acc0, clock, nxt, steps, load0 = acc(), 0.0, every, 0, loadavg()[:1]
    curve, per_step = [(0.0, acc0)], []
    try:
        while clock < budget:
            t = time.perf_counter()
            m = pt.train_step(steps)
            clock += time.perf_counter() - t
            steps += 1
            per_step.append({k: round(v, 4) for k, v in m.items()
                             if k.startswith(("time/", "rl/ds_rounds", "rl/groups_", "rl/truncated", "offpolicy/",
                                              "rollout/"))})
            if clock >= nxt or clock >= budget:
                curve.append((round(clock, 2), acc()))
                nxt += every
    finally:
        pt.close()
    gain = curve[-1][1] - acc0
    rec = {"variant": name, "overrides": VARIANTS[name], "sft_accuracy": acc0, "final": curve[-1][1], "gain": gain,
           "gain_per_min": round(60 * gain / clock, 4), "train_s": round(clock, 2), "steps": steps,
           "curve": curve, "loadavg_1m": load0 + loadavg()[:1], "means": _means(per_step)}
    log(f"ablation {name}: {acc0:.3f} -> {curve[-1][1]:.3f} in {clock:.0f}s ({steps} steps), "
        f"{rec['gain_per_min']:+.3f}/min")
    out.mkdir(parents=True, exist_ok=True)
    (out / "record.json").write_text(json.dumps({**rec, "per_step": per_step}, indent=2))
    return rec


def _means(per_step: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for m in per_step for k in m}
    return {k: round(sum(m[k] for m in per_step if k in m) / sum(1 for m in per_step if k in m), 4)
            for k in sorted(keys)}
