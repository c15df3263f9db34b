"""Image and video prompts through a real vLLM engine on the tiny Idefics3 model: the engine
expands the image tokens, a weight sync covers the vision tower and connector, and the trainer's
log-probs with pixel inputs match the engine's within 1e-3.

One engine for the module, in this process (engine start-up is ~20 s idle, minutes when busy)."""

from __future__ import annotations

import os

import pytest
import torch

from posttrain.core.data import load_rows
from posttrain.rl.logprobs import collate, response_logprobs, vision_inputs
from posttrain.tasks.tiny_vision import make_tiny_vision_model
from posttrain.tasks.visual import write_visual_task
from rollouts.media import encode_media_rows, load_media

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def vlm_rows(tmp_path_factory):
    d = tmp_path_factory.mktemp("vis")
    write_visual_task("visual-add", d / "add.jsonl", 3, difficulty=1, seed=0)
    write_visual_task("visual-video", d / "video.jsonl", 2, difficulty=1, seed=0)
    rows = load_rows(d / "add.jsonl") + load_rows(d / "video.jsonl")
    return make_tiny_vision_model(rows, d / "vlm", seed=1), rows


@pytest.fixture(scope="module")
def engine(vlm_rows):
    from rollouts.vllm_engine import VLLMEngine, engine_env

    saved = dict(os.environ)
    os.environ.update(engine_env("cpu", 1, None))
    try:
        eng = VLLMEngine(str(vlm_rows[0]), max_model_len=256, max_images_per_prompt=8)
        yield eng
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_image_and_video_prompts_sample_and_match_the_trainer_after_a_sync(engine, vlm_rows):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path, rows = vlm_rows
    processor = AutoProcessor.from_pretrained(path)
    model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32).eval()
    prompts = encode_media_rows(processor, rows)
    image_id = model.config.image_token_id
    assert [p.token_ids.count(image_id) for p in prompts] == [2, 2, 2, 6, 6]  # unexpanded: one per image / frame

    units = [((0, p.prompt_id, 0), p.token_ids, p.media) for p in prompts]
    before = engine.generate(units, temperature=1.0, top_p=1.0, max_tokens=6, base_seed=3)  # caches the images
    # New weights everywhere, the vision tower and connector included, in both the engine and the trainer:
    # the images embedded above must be embedded again with the new weights, not served from a cache.
    torch.manual_seed(0)
    sd = {k: v + 0.02 * torch.randn_like(v) for k, v in model.state_dict().items()}
    assert any(k.startswith("model.vision_model.") for k in sd) and any("connector" in k for k in sd)
    model.load_state_dict(sd)
    engine.load_weights(sd, version=1)

    outs = engine.generate(units, temperature=1.0, top_p=1.0, max_tokens=6, base_seed=3)
    assert all(o.weight_version == 1 and len(o.token_ids) > 0 for o in outs)
    assert all(b.weight_version == 0 for b in before)
    # the engine expanded each image token into <fake><global-img> 4 x <image> <fake>
    assert [o.prompt_token_ids.count(image_id) for o in outs] == [8, 8, 8, 24, 24]

    pad = processor.tokenizer.pad_token_id
    for group in (outs[:3], outs[3:]):  # the same number of images per batch
        batch = collate([o.prompt_token_ids for o in group], [o.token_ids for o in group], pad)
        batch.vision = vision_inputs(processor.image_processor, [load_media(p.media) for p in prompts
                                                                  if p.prompt_id in {o.prompt_id for o in group}])
        with torch.no_grad():
            lp = response_logprobs(model, batch)
        assert (batch.input_ids[:, batch.prompt_len:] == image_id).sum() == 0  # image tokens never in the response
        for i, o in enumerate(group):
            got = lp[i, :len(o.token_ids)]
            torch.testing.assert_close(got, torch.tensor(o.logprobs), atol=1e-3, rtol=0)
