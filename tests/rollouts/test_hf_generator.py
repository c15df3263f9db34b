"""The in-process HF generator honours the Generator protocol."""

import pytest
import torch

from rollouts.hf import HFGenerator
from rollouts.types import PromptInput, SamplingSpec


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    from posttrain.tasks.addition import make_addition_rows
    from posttrain.tasks.tiny import make_tiny_model

    path = make_tiny_model(make_addition_rows(50), tmp_path_factory.mktemp("m") / "tiny", hidden=64, layers=1, heads=1)
    return HFGenerator(path, max_batch=6)


def _prompts(gen, texts):
    tok = gen.tokenizer
    return [PromptInput(f"p{i}", list(tok.apply_chat_template([{"role": "user", "content": t}],
                                                               add_generation_prompt=True)["input_ids"]))
            for i, t in enumerate(texts)]


def test_grouped_and_deterministic(gen):
    prompts = _prompts(gen, ["What is 1 + 2?", "What is 33 + 4?", "What is 5 + 66?"])
    spec = SamplingSpec(n=4, temperature=1.0, max_tokens=6, seed=1)
    a = gen.generate(prompts, spec, step=2)
    assert [(r.prompt_id, r.sample_idx) for r in a] == [(p.prompt_id, i) for p in prompts for i in range(4)]
    assert all(r.step == 2 and len(r.token_ids) == len(r.logprobs) for r in a)
    assert all(r.finish_reason == "stop" and r.token_ids[-1] == gen.eos_id or r.finish_reason == "length" for r in a)
    b = gen.generate(prompts, spec, step=2)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]


def test_logprobs_are_the_models(gen):
    (p,) = _prompts(gen, ["What is 12 + 30?"])
    (r,) = gen.generate([p], SamplingSpec(n=1, temperature=0.7, max_tokens=5), step=0)
    ids = torch.tensor([p.token_ids + r.token_ids])
    with torch.no_grad():
        logp = torch.log_softmax(gen.model(ids).logits[0, :-1].float(), -1)
    expect = logp[len(p.token_ids) - 1:].gather(-1, ids[0, len(p.token_ids):, None])[:, 0]
    torch.testing.assert_close(torch.tensor(r.logprobs), expect, atol=1e-4, rtol=1e-4)


def test_left_padded_batch_matches_single_prompts(gen):
    prompts = _prompts(gen, ["What is 1 + 2?", "What is 99 + 10?"])
    spec = SamplingSpec(n=1, temperature=0.0, max_tokens=5)
    together = gen.generate(prompts, spec)
    alone = [gen.generate([p], spec)[0] for p in prompts]
    assert [r.token_ids for r in together] == [r.token_ids for r in alone]


def test_update_weights_stamps_version(gen):
    gen.update_weights({k: v.clone() for k, v in gen.model.state_dict().items()}, version=3)
    (p,) = _prompts(gen, ["What is 1 + 1?"])
    assert gen.generate([p], SamplingSpec(n=1, max_tokens=2))[0].weight_version == 3

