"""Streamed weight sync into a real vLLM engine in a Ray actor (CPU, gloo): the engine then
decodes exactly like the trainer's new weights, and one corrupted bucket fails the sync
with an error naming the engine. One pool per module (engine start-up ~15-25 s here)."""

from __future__ import annotations

import pytest
import torch

from posttrain.core.config import EngineConfig, RayConfig
from posttrain.core.data import chat_prompt_ids
from rollouts.types import PromptInput, SamplingSpec
from rollouts.weight_sync import WeightSyncError

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def pool(tiny_model):
    from rollouts.actors import RolloutPool

    # 64 KiB buckets: the tiny model's layers travel in several buckets
    p = RolloutPool(str(tiny_model), EngineConfig(num_actors=1, max_model_len=256), RayConfig(num_cpus=2),
                    unit_timeout_s=300, sync_timeout_s=60, weight_sync="stream", sync_bucket_mb=1 / 16)
    yield p
    p.close()


@pytest.fixture(scope="module")
def model_and_tok(tiny_model):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), AutoTokenizer.from_pretrained(tiny_model)


def _greedy_hf(model, prompts, n_new):
    out = []
    for p in prompts:
        ids = torch.tensor([p.token_ids])
        with torch.no_grad():
            gen = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new, do_sample=False,
                                 min_new_tokens=n_new, pad_token_id=0)
        out.append(gen[0, ids.shape[1]:].tolist())
    return out


def _perturb(model, seed):
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)


def test_streamed_sync_makes_engine_greedy_output_the_trainers(pool, model_and_tok):
    model, tok = model_and_tok
    prompts = [PromptInput(f"p{i}", chat_prompt_ids(tok, [{"role": "user", "content": f"What is {i} + 5?"}]))
               for i in range(3)]
    greedy = SamplingSpec(n=1, temperature=0.0, max_tokens=8, ignore_eos=True)
    before = [r.token_ids for r in pool.generate(prompts, greedy)]
    _perturb(model, 1)
    pool.update_weights(model.state_dict(), version=3)
    assert len(pool._plan[1]) > 2  # it really went in several buckets
    assert pool.engine_pids == [[pool.info[0]["pid"]]]  # vLLM's worker runs in the actor's process
    after = pool.generate(prompts, greedy)
    assert all(r.weight_version == 3 for r in after)
    assert [r.token_ids for r in after] == _greedy_hf(model, prompts, 8)
    assert [r.token_ids for r in after] != before
    tied = model.state_dict()["lm_head.weight"]  # the embedding's storage: sent once
    assert pool.last_sync["sync/streamed"] == 1.0 and pool.last_sync["mem/engine0_peak_rss_mb"] > 100
    assert pool.last_sync["sync/bytes"] == sum(v.numel() * 4 for v in model.state_dict().values()) - tied.numel() * 4
    engine_side = [pool.last_sync[f"sync/engine0_{k}"] for k in ("receive_s", "checksum_s", "load_s")]
    assert all(t >= 0 for t in engine_side) and engine_side[2] > 0  # where the engine's time went
    assert sum(engine_side) <= pool.last_sync["sync/seconds"]


def test_a_corrupted_bucket_fails_the_sync_naming_the_engine(pool, model_and_tok):
    model, tok = model_and_tok
    _perturb(model, 2)
    pool.corrupt_for_test = (0, 1)
    try:
        with pytest.raises(WeightSyncError, match=r"rollout engine 0 loaded bucket\(s\) \[1\]"):
            pool.update_weights(model.state_dict(), version=4)
    finally:
        pool.corrupt_for_test = None
    pool.update_weights(model.state_dict(), version=5)  # the next sync is clean and verified again
    prompt = [PromptInput("q", chat_prompt_ids(tok, [{"role": "user", "content": "What is 2 + 2?"}]))]
    out = pool.generate(prompt, SamplingSpec(n=1, temperature=0.0, max_tokens=6, ignore_eos=True))
    assert out[0].weight_version == 5 and out[0].token_ids == _greedy_hf(model, prompt, 6)[0]


def test_a_killed_engine_is_recovered_and_the_next_streamed_sync_forms_a_new_group(pool, model_and_tok):
    import os
    import signal

    import ray

    model, tok = model_and_tok
    _perturb(model, 3)
    pool.update_weights(model.state_dict(), version=6)
    old_group = pool._group
    os.kill(ray.get(pool.actors[0].pid.remote()), signal.SIGKILL)
    prompt = [PromptInput("k", chat_prompt_ids(tok, [{"role": "user", "content": "What is 3 + 4?"}]))]
    greedy = SamplingSpec(n=1, temperature=0.0, max_tokens=6, ignore_eos=True)
    out = pool.generate(prompt, greedy)  # Ray restarts the actor; the pool brings it to version 6 first
    assert out[0].weight_version == 6 and out[0].token_ids == _greedy_hf(model, prompt, 6)[0]
    assert pool._group is None  # the new incarnation is not in the old group
    _perturb(model, 4)
    pool.update_weights(model.state_dict(), version=7)
    assert pool._group is not None and pool._group is not old_group
    out = pool.generate(prompt, greedy)
    assert out[0].weight_version == 7 and out[0].token_ids == _greedy_hf(model, prompt, 6)[0]
