"""The HF generator on image prompts: the processor expands the image tokens and makes the pixels,
the rollouts carry the expanded prompt, and their log-probs are the trainer's (with pixel inputs)."""

from __future__ import annotations

import pytest
import torch

from posttrain.core.data import load_rows
from posttrain.rl.logprobs import collate, response_logprobs, vision_inputs
from rollouts.hf import HFGenerator
from rollouts.media import encode_media_rows, load_media
from rollouts.types import PromptInput, SamplingSpec


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from posttrain.tasks.tiny_vision import make_tiny_vision_model
    from posttrain.tasks.visual import write_visual_task

    d = tmp_path_factory.mktemp("hfv")
    write_visual_task("visual-count", d / "count.jsonl", 4, difficulty=2, seed=0)
    rows = load_rows(d / "count.jsonl")
    gen = HFGenerator(make_tiny_vision_model(rows, d / "vlm", layers=1, seed=0), max_batch=8)
    return gen, rows


def test_image_prompts_expand_sample_and_match_the_trainer(setup):
    gen, rows = setup
    prompts = encode_media_rows(gen.processor, rows)
    spec = SamplingSpec(n=2, temperature=1.0, max_tokens=5, seed=4)
    outs = gen.generate(prompts, spec, step=1)
    image_id = gen.model.config.image_token_id
    assert [o.prompt_token_ids.count(image_id) for o in outs] == [4] * 8  # one image -> 4 image tokens
    assert [o.token_ids for o in gen.generate(prompts, spec, step=1)] == [o.token_ids for o in outs]
    batch = collate([o.prompt_token_ids for o in outs], [o.token_ids for o in outs], gen.pad_id)
    media = {p.prompt_id: p.media for p in prompts}
    batch.vision = vision_inputs(gen.processor.image_processor, [load_media(media[o.prompt_id]) for o in outs])
    with torch.no_grad():
        lp = response_logprobs(gen.model, batch)
    for i, o in enumerate(outs):
        torch.testing.assert_close(lp[i, :len(o.token_ids)], torch.tensor(o.logprobs), atol=1e-4, rtol=0)


def test_mixed_text_and_media_batches_are_refused(setup):
    gen, rows = setup
    prompts = encode_media_rows(gen.processor, rows[:1]) + [PromptInput("t", [1, 2, 3])]
    with pytest.raises(ValueError, match="must not mix text and media prompts"):
        gen.generate(prompts, SamplingSpec(n=1, max_tokens=2))
