"""Build a Generator from config: `vllm` (Ray actors with vLLM engines) or `hf`
(transformers in this process: small models, CPU debugging, tests)."""

from __future__ import annotations

from typing import Any, Iterable

from posttrain.core.devices import DtypeChoice, resolve_dtype
from rollouts.actors import RolloutPool
from rollouts.hf import HFGenerator


def engine_device(backend: str, engine: Any, device: str = "cpu") -> str:
    """Where the engines run: vLLM actors on CPU unless given GPUs; `hf` on the trainer's device."""
    if backend == "vllm":
        return "cpu" if engine.num_gpus_per_actor == 0 else "cuda"
    return device


def engine_dtype(backend: str, engine: Any, device: str = "cpu", cpu_flags: Iterable[str] | None = None) -> DtypeChoice:
    """The engines' dtype: `engine.dtype`, with `auto` decided for their device (posttrain.core.devices;
    `cpu_flags` stand in for this CPU's)."""
    return resolve_dtype(engine.dtype, engine_device(backend, engine, device), cpu_flags)


def make_generator(backend: str, model_path: str, engine: Any, ray_cfg: Any = None, device: str = "cpu",
                   seed: int = 0, unit_timeout_s: float = 600.0, sync_timeout_s: float = 120.0,
                   max_restarts: int = 3, trust_remote_code: bool = False, weight_sync: str = "auto",
                   sync_bucket_mb: float = 256.0, sync_backend: str = "auto") -> Any:
    if backend == "vllm":  # the pool decides `auto` itself (benchmarks and tests build it directly)
        return RolloutPool(model_path, engine, ray_cfg, device=engine_device(backend, engine), max_restarts=max_restarts,
                           unit_timeout_s=unit_timeout_s, sync_timeout_s=sync_timeout_s, seed=seed,
                           trust_remote_code=trust_remote_code, weight_sync=weight_sync,
                           sync_bucket_mb=sync_bucket_mb, sync_backend=sync_backend)
    if backend == "hf":
        return HFGenerator(model_path, device=device, dtype=engine_dtype(backend, engine, device).dtype)
    raise ValueError(f"unknown rollout backend {backend!r}; use 'vllm' or 'hf'")
