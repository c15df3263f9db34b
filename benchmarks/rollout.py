"""Workload `rollout`: posttrain's RolloutPool (1 vLLM actor bound to both cores) vs HF
`generate` (torch, 2 threads) on the 27M model, every sample exactly N tokens long
(vLLM `ignore_eos`, HF `min_new_tokens`), and the engine's model FLOP/s as a fraction
of the fp32 matmul peak measured in the same run. Contenders alternate (ABBA order).
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


def run(model_dir: Path, params: int, sizes: Sizes, enforce_eager: bool = False) -> tuple[dict, dict]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    prompts = chat_prompts(tok, addition_rows(sizes.rollout_prompts, seed=7))
    n, T = sizes.rollout_samples, sizes.rollout_tokens
    t0 = time.perf_counter()
    # a loaded machine can take far longer than the pool's default 600 s deadline for one round
    engine = engine_config(enforce_eager, max_num_seqs=len(prompts) * n)
    pool = RolloutPool(str(model_dir), engine, RayConfig(num_cpus=2), unit_timeout_s=7200)
    start_s = time.perf_counter() - t0
    log(f"rollout: engine up in {start_s:.1f}s (enforce_eager={enforce_eager}), actor pid {pool.info[0]['pid']}, "
        f"driver pid {os.getpid()}")
    hf = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    rows: list[dict[str, Any]] = []
    try:
        pool_generate(pool, prompts[:2], 2, 8, step=10_000)  # warm-up both
        hf_generate(hf, prompts[:2], 2, 8, tok.pad_token_id, 0)
        for r in range(sizes.repeats):
            rec: dict[str, Any] = {"repeat": r, "loadavg_1m_start": loadavg()[:1]}
            rec["peak_flops"] = matmul_peak_flops(threads=2)
            order = ("pool", "hf") if r % 2 == 0 else ("hf", "pool")
            for who in order:
                if who == "pool":
                    rec["pool_s"], rec["pool_tokens"] = pool_generate(pool, prompts, n, T, step=r)
                else:
                    rec["hf_s"], rec["hf_tokens"] = hf_generate(hf, prompts, n, T, tok.pad_token_id, r)
            rec["peak_flops_after"] = matmul_peak_flops(threads=2)
            peak = max(rec["peak_flops"], rec["peak_flops_after"])
            rec["pool_tok_s"] = rec["pool_tokens"] / rec["pool_s"]
            rec["hf_tok_s"] = rec["hf_tokens"] / rec["hf_s"]
            rec["ratio"] = rec["pool_tok_s"] / rec["hf_tok_s"]
            rec["model_flops"] = 2 * params * rec["pool_tok_s"]
            rec["peak_fraction"] = rec["model_flops"] / peak
            rec["hf_peak_fraction"] = 2 * params * rec["hf_tok_s"] / peak
            rec["loadavg_1m_end"] = loadavg()[:1]
            log(f"rollout repeat {r}: pool {rec['pool_tok_s']:.0f} tok/s, hf {rec['hf_tok_s']:.0f} tok/s "
                f"({rec['ratio']:.2f}x), peak {peak / 1e9:.0f} GFLOP/s, fraction {rec['peak_fraction']:.2f}, "
                f"load {rec['loadavg_1m_start']}")
            rows.append(rec)
    finally:
        pool.close()
    headline = {**ratio_stats("rollout_vs_hf", [x["ratio"] for x in rows]),
                **ratio_stats("rollout_peak_fraction", [x["peak_fraction"] for x in rows])}
    details = {"parameters": params, "prompts": len(prompts), "samples_per_prompt": n, "new_tokens": T,
               "engine_start_s": round(start_s, 1), "enforce_eager": enforce_eager, "repeats": rows,
               "pool_tok_s_median": _med([x["pool_tok_s"] for x in rows]),
               "hf_tok_s_median": _med([x["hf_tok_s"] for x in rows]),
               "peak_gflops_median": _med([max(x["peak_flops"], x["peak_flops_after"]) / 1e9 for x in rows])}
    return headline, details


def _med(xs: list[float]) -> float:
    return round(statistics.median(xs), 2)
