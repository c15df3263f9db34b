"""Workload `rl_step`: end-to-end GSPO steps (generate, score, update, sync), posttrain's
trainer vs TRL's GRPOTrainer as GSPO, on the 27M model with the same batch, group size,
completion length (exactly N tokens: ignore_eos / min_new_tokens), lr, clip range and
4 optimizer steps per rollout batch. The reward is `digit_share` so every group has a
gradient in both trainers. The two alternate step by step in one process: a TRL
callback runs one posttrain step after each TRL generation cycle (4 optimizer steps),
outside TRL's clock. The first step of each is warm-up. posttrain runs its compiled
engine with `max_num_seqs` = the step's batch and, by default here, `algo.old_logprobs:
engine` (the sampler's log-probs as the old policy's; `--rl-old-logprobs trainer` recomputes).
With `bf16`, a second pair runs in bf16 (posttrain: bf16 engine, autocast trainer with fp32
master weights; TRL: `bf16=True`, its autocast), and `bf16_rl_step_vs_trl_best` divides
posttrain's bf16 step by the faster of TRL fp32 and TRL bf16 in the same cycle index.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import pt_side, trl_side
from benchmarks.common import Sizes, log
from benchmarks.model import addition_rows
from benchmarks.rewards_fn import digit_share
from benchmarks.stats import loadavg, ratio_stats
from posttrain.core.data import write_jsonl

REWARD = "benchmarks.rewards_fn:digit_share"
LR = 1e-5
MINIBATCHES = 4


def run(model_dir: Path, params: int, out: Path, sizes: Sizes, old_logprobs: str = "engine",
        bf16: bool = False) -> tuple[dict, dict]:
    """fp32 posttrain vs fp32 TRL; with `bf16`, then both again in bf16 (posttrain: bf16 engine and
    autocast trainer; TRL: `bf16=True`), and posttrain bf16 against the faster TRL of each pair."""
    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    rows = addition_rows(2000, seed=3)
    write_jsonl(out / "train.jsonl", rows)
    pairs = {dt: run_pair(model_dir, out, rows, sizes, old_logprobs, dt)
             for dt in (("float32", "bfloat16") if bf16 else ("float32",))}
    pt_rec, trl_rec = pairs["float32"]
    pt_meas, trl_meas = pt_rec[1:], trl_rec[1:]
    ratios = [a["tok_s"] / b["tok_s"] for a, b in zip(pt_meas, trl_meas)]
    headline = ratio_stats("rl_step_vs_trl", ratios)
    P, G, T = sizes.rl_prompts, sizes.rl_group, sizes.rl_tokens
    details = {"parameters": params, "old_logprobs": old_logprobs, "prompts_per_step": P, "group_size": G,
               "new_tokens": T, "lr": LR,
               "minibatches_per_step": MINIBATCHES, "reward": REWARD, "posttrain_steps": pt_rec,
               "trl_cycles": trl_rec, "ratios": [round(r, 3) for r in ratios],
               "posttrain_tok_s_median": _med([r["tok_s"] for r in pt_meas]),
               "trl_tok_s_median": _med([r["tok_s"] for r in trl_meas])}
    if bf16:
        pt16, trl16 = (x[1:] for x in pairs["bfloat16"])
        best = [max(a["tok_s"], b["tok_s"]) for a, b in zip(trl_meas, trl16)]  # TRL at its faster dtype
        ratios16 = [a["tok_s"] / b for a, b in zip(pt16, best)]
        headline.update(ratio_stats("bf16_rl_step_vs_trl_best", ratios16))
        details["bfloat16"] = {"posttrain_steps": pairs["bfloat16"][0], "trl_cycles": pairs["bfloat16"][1],
                               "ratios_vs_trl_best": [round(r, 3) for r in ratios16],
                               "posttrain_tok_s_median": _med([r["tok_s"] for r in pt16]),
                               "trl_tok_s_median": _med([r["tok_s"] for r in trl16]),
                               "posttrain_bf16_vs_fp32": _med([a["tok_s"] / b["tok_s"] for a, b in zip(pt16, pt_meas)])}
    return headline, details


def run_pair(model_dir: Path, out: Path, rows: list[dict[str, Any]], sizes: Sizes, old_logprobs: str,
             dtype: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """posttrain and TRL in `dtype`, alternating; (posttrain steps, TRL cycles), the first of each warm-up."""
    from transformers import TrainerCallback

    P, G, T, cycles = sizes.rl_prompts, sizes.rl_group, sizes.rl_tokens, sizes.rl_cycles
    cfg = pt_side.gspo_config(str(model_dir), str(out / "train.jsonl"), P, G, T, LR, REWARD,
                              skip_uniform_groups=False, enforce_eager=False, dtype=dtype,
                              extra=[f"engine.max_model_len={T + 64}", f"engine.max_num_seqs={P * G}",
                                     f"algo.old_logprobs={old_logprobs}"])
    pt = pt_side.make_trainer(cfg, out / f"posttrain-{dtype}")
    pt_rec: list[dict[str, Any]] = []
    trl_rec: list[dict[str, Any]] = []

    def pt_step(step: int) -> None:
        before = pt.generator.tokens
        t = time.perf_counter()
        m = pt.train_step(step)
        secs = time.perf_counter() - t
        rec = {"step": step, "seconds": secs, "tokens": pt.generator.tokens - before,
               **{k: round(v, 3) for k, v in m.items() if k.startswith("time/")}, "loadavg_1m": loadavg()[:1]}
        rec["tok_s"] = rec["tokens"] / secs
        pt_rec.append(rec)
        log(f"rl_step posttrain {dtype} step {step}: {secs:.1f}s, {rec['tok_s']:.0f} tok/s "
            f"(gen {m['time/generate']:.1f} score {m['time/score']:.1f} update {m['time/update']:.1f} "
            f"sync {m['time/sync']:.1f})")

    reward = trl_side.TokenCounter(digit_share)

    class Alternate(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = self.tok0 = self.gen0 = 0.0

        def mark(self, trainer_ref: Any) -> None:
            self.t0, self.tok0 = time.perf_counter(), reward.tokens
            self.gen0 = getattr(trainer_ref[0], "bench_generate_s", 0.0) if trainer_ref else 0.0

        def on_train_begin(self, args, state, control, **kw):
            self.mark(holder)

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % MINIBATCHES:
                return
            secs = time.perf_counter() - self.t0
            gen = holder[0].bench_generate_s - self.gen0
            rec = {"cycle": len(trl_rec), "seconds": secs, "tokens": reward.tokens - self.tok0,
                   "generate_s": round(gen, 3), "loadavg_1m": loadavg()[:1]}
            rec["tok_s"] = rec["tokens"] / secs
            trl_rec.append(rec)
            log(f"rl_step TRL {dtype} cycle {rec['cycle']}: {secs:.1f}s, {rec['tok_s']:.0f} tok/s (gen {gen:.1f})")
            if len(trl_rec) <= cycles:
                pt_step(len(pt_rec))
            self.mark(holder)

    holder: list[Any] = []
    try:
        pt_step(0)  # warm-up
        tcfg = trl_side.gspo_config(out / f"trl-{dtype}", P, G, T, LR, MINIBATCHES * (cycles + 1), MINIBATCHES,
                                    min_tokens=T, bf16=dtype == "bfloat16")
        trainer = trl_side.make_trainer(str(model_dir), rows, reward, tcfg, [Alternate()])
        holder.append(trainer)
        trainer.train()
    finally:
        pt.close()
    return pt_rec, trl_rec


def _med(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 2) if xs else None
