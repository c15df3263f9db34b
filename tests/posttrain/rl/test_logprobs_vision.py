"""Response log-probs with pixel inputs (image-text models): the pixels reach the model, batches
slice their pixels with their rows, and rows with fewer images are padded by the processor."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from posttrain.rl.logprobs import collate, response_logprobs, vision_inputs


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from posttrain.tasks.tiny_vision import make_tiny_vision_model

    rows = [{"id": str(i), "prompt": f"<image> How many circles? {i}", "answer": str(i)} for i in range(10)]
    path = make_tiny_vision_model(rows, tmp_path_factory.mktemp("vlm") / "m", layers=1, seed=0)
    return AutoProcessor.from_pretrained(path), AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)


def _prompt_ids(processor, n_images):
    text = processor.apply_chat_template([{"role": "user", "content": "<image>" * n_images + " How many?"}],
                                         add_generation_prompt=True, tokenize=False)
    return processor(text=text, images=[Image.new("RGB", (56, 56))] * n_images)["input_ids"][0]


def test_pixels_reach_the_model_and_follow_their_rows(vlm):
    processor, model = vlm
    ids = _prompt_ids(processor, 1)
    resp = processor.tokenizer("3", add_special_tokens=False)["input_ids"] + [processor.tokenizer.eos_token_id]
    batch = collate([ids, ids], [resp, resp], processor.tokenizer.pad_token_id)
    red, noise = Image.new("RGB", (56, 56), (255, 0, 0)), Image.effect_noise((56, 56), 80).convert("RGB")
    batch.vision = vision_inputs(processor.image_processor, [[red], [noise]])
    with torch.no_grad():
        lp = response_logprobs(model, batch)
        lp_swapped = response_logprobs(model, batch.select([1, 0]))
    assert lp.shape == (2, len(resp)) and (lp < 0).all()
    assert (lp[0] - lp[1]).abs().max() > 1e-4  # same text, different pixels, different log-probs
    torch.testing.assert_close(lp_swapped, lp.flip(0))  # select() moved each row's pixels with it
    assert batch.response_mask.sum() == 2 * len(resp)  # only the response; the image tokens sit in the prompt


def test_rows_with_fewer_images_are_padded_and_masked(vlm):
    processor, model = vlm
    v = vision_inputs(processor.image_processor, [[Image.new("RGB", (56, 56))] * 2, [Image.new("RGB", (30, 60))]])
    assert v["pixel_values"].shape[:2] == (2, 2) and v["pixel_attention_mask"][1, 1].sum() == 0
    assert set(v) == {"pixel_values", "pixel_attention_mask"}


def test_a_sampled_image_token_in_the_response_is_scored_not_filled_with_pixels(vlm):
    processor, model = vlm
    ids = _prompt_ids(processor, 1)
    image_token = model.config.image_token_id
    resp = [image_token] + processor.tokenizer("3", add_special_tokens=False)["input_ids"]
    batch = collate([ids], [resp], processor.tokenizer.pad_token_id)
    batch.vision = vision_inputs(processor.image_processor, [[Image.new("RGB", (56, 56), (255, 0, 0))]])
    with torch.no_grad():
        lp = response_logprobs(model, batch)  # the forward would put a 5th image slot there and raise
        logits = model(input_ids=batch.input_ids[:, :-len(resp)], attention_mask=batch.attention_mask[:, :-len(resp)],
                       **batch.vision).logits[0, -1]
    assert torch.isfinite(lp).all() and lp.shape == (1, len(resp))
    torch.testing.assert_close(lp[0, 0], torch.log_softmax(logits, -1)[image_token])  # its own log-prob is exact
    assert batch.input_ids[0, -len(resp)] == image_token  # the batch itself is unchanged


def test_a_bf16_working_copy_takes_fp32_pixels(vlm):
    """The bf16 update (posttrain.rl.mixed) feeds the processor's fp32 pixels to a bf16 vision tower."""
    from posttrain.rl.mixed import WorkingCopy

    processor, model = vlm
    ids = _prompt_ids(processor, 1)
    resp = processor.tokenizer("3", add_special_tokens=False)["input_ids"] + [processor.tokenizer.eos_token_id]
    batch = collate([ids], [resp], processor.tokenizer.pad_token_id)
    batch.vision = vision_inputs(processor.image_processor, [[Image.new("RGB", (56, 56), (255, 0, 0))]])
    with torch.no_grad():
        lp16 = response_logprobs(WorkingCopy(model).module.eval(), batch)
        lp32 = response_logprobs(model, batch)
    assert lp16.dtype == torch.float32
    torch.testing.assert_close(lp16, lp32, atol=0.1, rtol=0.0)
