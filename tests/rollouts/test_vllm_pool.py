"""The real path: vLLM engines inside Ray actors, weight sync, and a killed actor.

One pool per module (engine start-up costs ~15-25 s here)."""

from __future__ import annotations

import os
import signal

import pytest
import torch

from posttrain.core.config import EngineConfig, RayConfig
from posttrain.core.data import chat_prompt_ids
from posttrain.rl.logprobs import collate, response_logprobs
from rollouts.types import PromptInput, SamplingSpec

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def pool(tiny_model):
    from rollouts.actors import RolloutPool

    p = RolloutPool(str(tiny_model), EngineConfig(num_actors=1, max_model_len=256),
                    RayConfig(num_cpus=2), unit_timeout_s=300)
    yield p
    p.close()


@pytest.fixture(scope="module")
def hf_model(tiny_model):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)


def _prompts(tok, n=3):
    return [PromptInput(f"p{i}", chat_prompt_ids(tok, [{"role": "user", "content": f"What is {i} + 7?"}]))
            for i in range(n)]


def test_generate_shapes_keys_and_determinism(pool, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompts = _prompts(tok)
    spec = SamplingSpec(n=4, temperature=1.0, max_tokens=8, seed=1)
    out = pool.generate(prompts, spec, step=5)
    assert [(r.prompt_id, r.sample_idx) for r in out] == [(p.prompt_id, j) for p in prompts for j in range(4)]
    assert all(len(r.logprobs) == len(r.token_ids) > 0 and r.step == 5 for r in out)
    assert all(lp <= 0 for r in out for lp in r.logprobs)
    again = pool.generate(prompts, spec, step=5)  # same keys, same seeds -> same tokens
    assert [r.token_ids for r in again] == [r.token_ids for r in out]


def test_weight_sync_makes_engine_logprobs_match_trainer(pool, hf_model, tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    prompts = _prompts(tok, 2)
    before = pool.generate(prompts, SamplingSpec(n=2, max_tokens=6, seed=3), step=0)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in hf_model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    pool.update_weights(hf_model.state_dict(), version=7)
    after = pool.generate(prompts, SamplingSpec(n=2, max_tokens=6, seed=3), step=0)
    assert all(r.weight_version == 7 for r in after)
    # trainer-side logprobs of the engine's own samples under the updated model
    batch = collate([r.prompt_token_ids for r in after], [r.token_ids for r in after], tok.pad_token_id)
    with torch.no_grad():
        trainer_lp = response_logprobs(hf_model, batch)
    for i, r in enumerate(after):
        engine_lp = torch.tensor(r.logprobs)
        assert torch.allclose(engine_lp, trainer_lp[i, :len(r.token_ids)], atol=1e-3), (engine_lp, trainer_lp[i])
    # and the old weights' logprobs are clearly different: the sync really happened
    assert any(a.token_ids != b.token_ids or max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) > 1e-2
               for a, b in zip(before, after))


def test_killed_actor_is_restarted_synced_and_units_done_once(pool, hf_model, tiny_model):
    import ray
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    pool.update_weights(hf_model.state_dict(), version=8)
    pid = ray.get(pool.actors[0].pid.remote())
    incarnation, restarts = pool.incarnations[0], pool.restarts
    prompts = _prompts(tok, 4)
    spec = SamplingSpec(n=3, max_tokens=8, seed=4)
    expected = pool.generate(prompts, spec, step=9)
    os.kill(pid, signal.SIGKILL)
    out = pool.generate(prompts, spec, step=9)
    keys = [(r.prompt_id, r.sample_idx) for r in out]
    assert len(keys) == len(set(keys)) == 12
    assert ray.get(pool.actors[0].pid.remote()) != pid
    assert all(r.weight_version == 8 for r in out)  # restarted engine got the current weights first
    assert [r.token_ids for r in out] == [r.token_ids for r in expected]
    assert pool.incarnations[0] != incarnation  # the pool saw the new incarnation (and synced it) ...
    assert pool.restarts == restarts  # ... which Ray restarted: no weight-sync failure made the pool kill one


def test_large_batch_of_seeded_units_needs_no_chunked_prefill(pool, tiny_model):
    """64 prompts x 8 seeded samples exceed vLLM's default 4096-token prefill budget;
    a chunked prefill would crash seeded sampling on CPU (regression)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    out = pool.generate(_prompts(tok, 64), SamplingSpec(n=8, max_tokens=4, seed=5), step=11)
    assert len(out) == 512 and len({(r.prompt_id, r.sample_idx) for r in out}) == 512
