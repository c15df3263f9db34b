"""Workload `accuracy_long`: the time-to-accuracy race where generation matters.

Same race as the accuracy workload (benchmarks.accuracy.one_repeat: posttrain and TRL
alternate, equal training wall time, evaluation excluded), but on the 27M benchmark model
(random init, the rl_step workload's model) with responses of up to 64 new tokens, so that
generation is a real share of each step. The task is dense: the reward is `digit_share`
(share of digits in the response), and the held-out "accuracy" is its mean over sampled
completions of held-out prompts (2 per prompt, temperature 1, fixed seeds; see
`sampled_reward`); both contenders start from the same weights. Headline:
`time_to_accuracy_gain_vs_trl_long` = posttrain's gain / TRL's gain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from benchmarks import pt_side
from benchmarks.accuracy import SharedPool, one_repeat
from benchmarks.common import Sizes
from benchmarks.model import addition_rows, make_bench_model
from benchmarks.rewards_fn import digit_share
from benchmarks.stats import ratio_stats
from posttrain.core.data import load_rows, write_jsonl
from rollouts.evaluate import encode_rows
from rollouts.hf import HFGenerator
from rollouts.types import SamplingSpec

REWARD = "benchmarks.rewards_fn:digit_share"
NEW_TOKENS, PROMPTS, GROUP, LR = 64, 8, 8, 3e-5


def sampled_reward(model: Any, tok: Any, rows: list, max_new_tokens: int, n: int = 2, seed: int = 123,
                   reward: Any = digit_share) -> float:
    """Mean reward (digit_share) of n samples (temperature 1, fixed seeds) per held-out prompt: the policy's
    expected reward. Greedy decoding is a step function here (a random model's argmax token turns
    into a digit after one update and the greedy score jumps from 0 to 1)."""
    was_training = model.training
    try:
        gen = HFGenerator(model, tok, device=None, max_batch=128)
        outs = gen.generate(encode_rows(tok, rows), SamplingSpec(n=n, temperature=1.0, max_tokens=max_new_tokens,
                                                                 seed=seed))
        return sum(reward(o.text, {}) for o in outs) / max(len(outs), 1)
    finally:
        model.train(was_training)


def setup(out: Path, sizes: Sizes, quick: bool = False) -> dict:
    """The start model and data of the workload (also the ablation's `--ablation-task long`)."""
    out.mkdir(parents=True, exist_ok=True)
    model_dir, params = make_bench_model(out.parent / "model")
    write_jsonl(out / "train.jsonl", addition_rows(2000, seed=5))
    write_jsonl(out / "eval.jsonl", addition_rows(sizes.acc_eval_rows, seed=6))
    return {"sft": str(model_dir), "train": str(out / "train.jsonl"), "eval": str(out / "eval.jsonl"),
            "source": f"the {params / 1e6:.1f}M benchmark model (random init)", "new_tokens": 16 if quick else NEW_TOKENS}


def config(src: dict, overrides: list[str] = ()) -> Any:
    tokens = src["new_tokens"]
    return pt_side.gspo_config(src["sft"], src["train"], PROMPTS, GROUP, tokens, LR, REWARD, enforce_eager=False,
                               extra=[f"eval.reward={REWARD}", f"engine.max_model_len={tokens + 64}",
                                      f"engine.max_num_seqs={PROMPTS * GROUP}", *overrides])


def run(out: Path, sizes: Sizes, quick: bool = False, overrides: list[str] = ()) -> tuple[dict, dict]:
    torch.set_num_threads(2)
    src = setup(out, sizes, quick)
    tokens, cfg = src["new_tokens"], config(src, overrides)
    shared, repeats = SharedPool(), []
    rows, eval_rows = load_rows(src["train"]), load_rows(src["eval"])
    try:
        for r in range(sizes.repeats):
            repeats.append(one_repeat(out / f"repeat{r}", src, rows, eval_rows, sizes, shared, cfg, digit_share,
                                      measure=lambda model, tok: sampled_reward(model, tok, eval_rows, tokens)))
    finally:
        if shared.inner is not None:
            shared.inner.close()
    headline = ratio_stats("time_to_accuracy_gain_vs_trl_long", [x["ratio"] for x in repeats])
    details = {**src, "budget_s": sizes.acc_budget_s, "eval_every_s": sizes.acc_eval_every_s,
               "eval_rows": len(eval_rows), "new_tokens": tokens, "prompts_per_step": PROMPTS, "group_size": GROUP,
               "lr": LR, "reward": REWARD, "posttrain_overrides": list(overrides), "repeats": repeats}
    return headline, details
