"""The hardware's own matmul peak (fp32, or bf16 on a matrix unit), measured with a large `torch.mm` in this process."""

from __future__ import annotations

import time

import torch


def matmul_peak_flops(n: int = 2048, iters: int = 6, threads: int | None = None,
                      dtype: torch.dtype = torch.float32) -> float:
    """Best-of FLOP/s of an n x n matmul in `dtype` (2 n^3 FLOPs), after one warm-up."""
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        c = torch.empty(n, n, dtype=dtype)
        torch.mm(a, b, out=c)
        best = float("inf")
        for _ in range(iters):
            t = time.perf_counter()
            torch.mm(a, b, out=c)
            best = min(best, time.perf_counter() - t)
        return 2 * n**3 / best
    finally:
        torch.set_num_threads(old)
