"""A bf16 vLLM engine (`dtype: auto` where the CPU has AMX): it starts, takes bf16 weights at
sync, and its log-probs follow the trainer's bf16-autocast ones to bf16 precision (the
engine-vs-trainer gap that every GPU run has)."""

from __future__ import annotations

import pytest
import torch

from posttrain.core.config import EngineConfig, RayConfig
from posttrain.core.data import chat_prompt_ids
from posttrain.core.devices import autocast, fast_bf16, resolve_dtype
from posttrain.rl.logprobs import collate, response_logprobs
from rollouts.types import PromptInput, SamplingSpec

pytestmark = [pytest.mark.engine, pytest.mark.skipif(
    not fast_bf16("cpu"), reason=f"no fast bf16 on this CPU ({resolve_dtype('auto', 'cpu').reason})")]


def test_auto_engine_runs_bf16_and_syncs_bf16_weights(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rollouts.actors import RolloutPool

    pool = RolloutPool(str(tiny_model), EngineConfig(num_actors=1, max_model_len=256, dtype="auto"),
                       RayConfig(num_cpus=2), unit_timeout_s=300)
    try:
        assert pool.dtype == "bfloat16"
        tok = AutoTokenizer.from_pretrained(tiny_model)
        prompts = [PromptInput(f"p{i}", chat_prompt_ids(tok, [{"role": "user", "content": f"What is {i} + 7?"}]))
                   for i in range(2)]
        model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
        torch.manual_seed(0)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        pool.update_weights(model.state_dict(), version=3)
        out = pool.generate(prompts, SamplingSpec(n=2, max_tokens=6, seed=3), step=0)
        assert all(r.weight_version == 3 for r in out)
        batch = collate([r.prompt_token_ids for r in out], [r.token_ids for r in out], tok.pad_token_id)
        with torch.no_grad(), autocast("cpu", "bfloat16"):
            trainer_lp = response_logprobs(model.eval(), batch)
        gap = max(abs(lp - float(trainer_lp[i, t])) for i, r in enumerate(out) for t, lp in enumerate(r.logprobs))
        assert gap < 0.1, gap  # bf16 on both sides: close, not equal
    finally:
        pool.close()
