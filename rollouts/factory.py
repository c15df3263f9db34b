"""Build a Generator from config: `vllm` (Ray actors with vLLM engines) or `hf`
(transformers in this process: small models, CPU debugging, tests)."""

from __future__ import annotations

from typing import Any

from rollouts.actors import RolloutPool
from rollouts.hf import HFGenerator


def make_generator(backend: str, model_path: str, engine: Any, ray_cfg: Any = None, device: str = "cpu",
                   seed: int = 0, unit_timeout_s: float = 600.0, sync_timeout_s: float = 120.0,
                   max_restarts: int = 3, trust_remote_code: bool = False) -> Any:
    if backend == "vllm":
        engine_device = "cpu" if engine.num_gpus_per_actor == 0 else "cuda"
        return RolloutPool(model_path, engine, ray_cfg, device=engine_device, max_restarts=max_restarts,
                           unit_timeout_s=unit_timeout_s, sync_timeout_s=sync_timeout_s, seed=seed,
                           trust_remote_code=trust_remote_code)
    if backend == "hf":
        return HFGenerator(model_path, device=device, dtype=engine.dtype if engine.dtype != "auto" else "float32")
    raise ValueError(f"unknown rollout backend {backend!r}; use 'vllm' or 'hf'")
