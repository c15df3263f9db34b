"""The tiny Idefics3 model: transformers loads and runs it, its processor prices frames (vLLM runs it in
tests/rollouts/test_vllm_media.py)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from posttrain.core.video import plan_slowfast, processor_token_counter

ROWS = [{"id": str(i), "prompt": f"<image> How many circles are there? {i}", "answer": str(i)} for i in range(30)]


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    from posttrain.tasks.tiny_vision import make_tiny_vision_model

    return make_tiny_vision_model(ROWS, tmp_path_factory.mktemp("vlm") / "tiny", seed=3)


def _prompt(processor, n_images=1):
    msgs = [{"role": "user", "content": "<image>" * n_images + " How many circles are there?"}]
    return processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)


def test_transformers_loads_runs_and_is_seeded(tiny_vlm, tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from posttrain.tasks.tiny_vision import make_tiny_vision_model

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    model = AutoModelForImageTextToText.from_pretrained(tiny_vlm, dtype=torch.float32)
    enc = processor(text=_prompt(processor), images=[Image.new("RGB", (70, 50), (200, 30, 30))], return_tensors="pt")
    assert enc["pixel_values"].shape[-2:] == (56, 56)
    ids = enc["input_ids"][0].tolist()
    assert ids.count(model.config.image_token_id) == 4  # (56 / 14)^2 patches / 2^2 (pixel shuffle)
    logits = model(**enc).logits
    assert logits.shape == (1, len(ids), len(processor.tokenizer)) and torch.isfinite(logits).all()
    # "circles" was in the training text: one token, not bytes.
    assert len(processor.tokenizer(" circles", add_special_tokens=False)["input_ids"]) == 1
    again = make_tiny_vision_model(ROWS, tmp_path / "again", seed=3)
    a = AutoModelForImageTextToText.from_pretrained(again, dtype=torch.float32)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), a.state_dict().values()))
    assert json.loads((tiny_vlm / "posttrain_tiny.json").read_text())["image_seq_len"] == 4


def test_the_processor_prices_a_frame_as_the_prompt_grows(tiny_vlm):
    """processor_token_counter answers what one more image adds to the tokenized prompt."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_vlm)
    count = processor_token_counter(processor)
    img = Image.new("RGB", (84, 28))
    one = processor(text=_prompt(processor, 1), images=[img])["input_ids"][0]
    two = processor(text=_prompt(processor, 2), images=[img, img])["input_ids"][0]
    assert len(two) - len(one) == count(28, 84) == 7  # <fake><global-img> 4 x <image> <fake>
    # Idefics3 rescales every image to one size: fast frames cost what slow ones do (docs/multimodal.md).
    plan = plan_slowfast([True, False, False], [0, 1, 2], 112, 112, count, budget=21)
    assert [f.tokens for f in plan.frames] == [7, 7, 7]
    with pytest.raises(ValueError, match="cannot say what an image costs"):
        processor_token_counter(object())
