"""Workload `rollout`: posttrain's RolloutPool (1 vLLM actor bound to both cores) vs HF
`generate` (torch, 2 threads) on the 27M model, every sample exactly N tokens long
(vLLM `ignore_eos`, HF `min_new_tokens`), and the engine's model FLOP/s as a fraction
of the fp32 matmul peak measured in the same run. Contenders alternate (ABBA order).

With `bf16` (default where the CPU has a fast bf16 unit), a second pool runs a bf16 engine
and HF generates in bf16 too, alternating with the fp32 pair in the same repeats, and the
bf16 matmul peak is measured beside the fp32 one: `bf16_rollout_vs_fp32` (bf16 pool /
fp32 pool) and `bf16_rollout_vs_hf_best` (bf16 pool / the faster of HF fp32 and HF bf16).
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import Sizes, chat_prompts, engine_config, log
from benchmarks.model import addition_rows
from benchmarks.peak import matmul_peak_flops
from benchmarks.stats import loadavg, ratio_stats
from posttrain.core.config import RayConfig
from rollouts.actors import RolloutPool
from rollouts.types import SamplingSpec


def hf_generate(model: Any, prompts: list[Any], n: int, tokens: int, pad_id: int, seed: int) -> tuple[float, int]:
    """Sample n x `tokens` per prompt in one left-padded batch; (seconds, new tokens)."""
    flat = [p.token_ids for p in prompts for _ in range(n)]
    width = max(len(t) for t in flat)
    ids = torch.tensor([[pad_id] * (width - len(t)) + list(t) for t in flat])  # (B, P)
    mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in flat])
    torch.manual_seed(seed)
    t = time.perf_counter()
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0,
                             top_k=0, max_new_tokens=tokens, min_new_tokens=tokens, pad_token_id=pad_id)
    secs = time.perf_counter() - t
    return secs, int(out[:, width:].numel())


def pool_generate(pool: Any, prompts: list[Any], n: int, tokens: int, step: int) -> tuple[float, int]:
    spec = SamplingSpec(n=n, temperature=1.0, top_p=1.0, max_tokens=tokens, seed=0, ignore_eos=True)
    t = time.perf_counter()
    outs = pool.generate(prompts, spec, step=step)
    secs = time.perf_counter() - t
    return secs, sum(len(o.token_ids) for o in outs)


def run(model_dir: Path, params: int, sizes: Sizes, enforce_eager: bool = False,
        bf16: bool = False) -> tuple[dict, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = chat_prompts(tok, addition_rows(sizes.rollout_prompts, seed=7))
    n, T = sizes.rollout_samples, sizes.rollout_tokens
    dtypes = ("float32", "bfloat16") if bf16 else ("float32",)
    t0 = time.perf_counter()
    pools: dict[str, Any] = {}
    try:
        for dt in dtypes:  # idle engines wait without spinning: both stay up and alternate
            # a loaded machine can take far longer than the pool's default 600 s deadline for one round
            engine = engine_config(enforce_eager, max_num_seqs=len(prompts) * n, dtype=dt)
            pools[dt] = RolloutPool(str(model_dir), engine, RayConfig(num_cpus=2), unit_timeout_s=7200)
        start_s = time.perf_counter() - t0
        log(f"rollout: engines {dtypes} up in {start_s:.1f}s (enforce_eager={enforce_eager}), driver pid {os.getpid()}")
        hfs = {dt: AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dt)).eval()
               for dt in dtypes}
        rows = measure(pools, hfs, prompts, n, T, tok.pad_token_id, params, sizes.repeats)
    finally:
        for pool in reversed(list(pools.values())):  # the first pool owns the Ray cluster
            pool.close()
    headline = {**ratio_stats("rollout_vs_hf", [x["ratio"] for x in rows]),
                **ratio_stats("rollout_peak_fraction", [x["peak_fraction"] for x in rows])}
    details = {"parameters": params, "prompts": len(prompts), "samples_per_prompt": n, "new_tokens": T,
               "engine_start_s": round(start_s, 1), "enforce_eager": enforce_eager, "dtypes": list(dtypes),
               "repeats": rows,
               "pool_tok_s_median": _med([x["pool_tok_s"] for x in rows]),
               "hf_tok_s_median": _med([x["hf_tok_s"] for x in rows]),
               "peak_gflops_median": _med([max(x["peak_flops"], x["peak_flops_after"]) / 1e9 for x in rows])}
    if bf16:
        headline.update(ratio_stats("bf16_rollout_vs_fp32", [x["bf16_vs_fp32"] for x in rows]))
        headline.update(ratio_stats("bf16_rollout_vs_hf_best", [x["bf16_vs_hf_best"] for x in rows]))
        details.update(pool_bf16_tok_s_median=_med([x["pool_bf16_tok_s"] for x in rows]),
                       hf_bf16_tok_s_median=_med([x["hf_bf16_tok_s"] for x in rows]),
                       bf16_peak_gflops_median=_med([x["bf16_peak_flops"] / 1e9 for x in rows]),
                       bf16_peak_fraction_median=_med([x["bf16_peak_fraction"] for x in rows]))
    return headline, details


def measure(pools: dict[str, Any], hfs: dict[str, Any], prompts: list[Any], n: int, T: int, pad_id: int,
            params: int, repeats: int) -> list[dict[str, Any]]:
    """`repeats` rounds; each times every contender once, in an order that rotates between rounds."""
    names = {"float32": ("pool", "hf"), "bfloat16": ("pool_bf16", "hf_bf16")}
    contenders = [(names[dt][0], pools[dt]) for dt in pools] + [(names[dt][1], hfs[dt]) for dt in hfs]
    for dt in pools:  # warm-up every contender
        pool_generate(pools[dt], prompts[:2], 2, 8, step=10_000)
        hf_generate(hfs[dt], prompts[:2], 2, 8, pad_id, 0)
    rows = []
    for r in range(repeats):
        rec: dict[str, Any] = {"repeat": r, "loadavg_1m_start": loadavg()[:1]}
        rec["peak_flops"] = matmul_peak_flops(threads=2)
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for who, obj in (order if r % 2 == 0 else order[::-1]):
            if who.startswith("pool"):
                secs, tokens = pool_generate(obj, prompts, n, T, step=r)
            else:
                secs, tokens = hf_generate(obj, prompts, n, T, pad_id, r)
            rec[f"{who}_s"], rec[f"{who}_tokens"], rec[f"{who}_tok_s"] = secs, tokens, tokens / secs
        rec["peak_flops_after"] = matmul_peak_flops(threads=2)
        peak = max(rec["peak_flops"], rec["peak_flops_after"])
        rec["ratio"] = rec["pool_tok_s"] / rec["hf_tok_s"]
        rec["model_flops"] = 2 * params * rec["pool_tok_s"]
        rec["peak_fraction"] = rec["model_flops"] / peak
        rec["hf_peak_fraction"] = 2 * params * rec["hf_tok_s"] / peak
        msg = (f"rollout repeat {r}: pool {rec['pool_tok_s']:.0f} tok/s, hf {rec['hf_tok_s']:.0f} tok/s "
               f"({rec['ratio']:.2f}x), peak {peak / 1e9:.0f} GFLOP/s, fraction {rec['peak_fraction']:.2f}")
        if "pool_bf16_tok_s" in rec:
            rec["bf16_peak_flops"] = matmul_peak_flops(threads=2, dtype=torch.bfloat16)
            rec["bf16_vs_fp32"] = rec["pool_bf16_tok_s"] / rec["pool_tok_s"]
            rec["bf16_vs_hf_best"] = rec["pool_bf16_tok_s"] / max(rec["hf_tok_s"], rec["hf_bf16_tok_s"])
            rec["bf16_peak_fraction"] = 2 * params * rec["pool_bf16_tok_s"] / rec["bf16_peak_flops"]
            msg += (f"; bf16 pool {rec['pool_bf16_tok_s']:.0f} tok/s ({rec['bf16_vs_fp32']:.2f}x fp32), hf bf16 "
                    f"{rec['hf_bf16_tok_s']:.0f} tok/s, bf16 peak {rec['bf16_peak_flops'] / 1e9:.0f} GFLOP/s")
        rec["loadavg_1m_end"] = loadavg()[:1]
        log(msg + f", load {rec['loadavg_1m_start']}")
        rows.append(rec)
    return rows


def _med(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)
