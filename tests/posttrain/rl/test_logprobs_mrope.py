"""GSPO log-probs for a Qwen2.5-VL-style model: flattened image patches (`image_grid_thw`) travel
with their rows through `select`, and the model's own 3-D M-RoPE positions are used. A tiny random
Qwen2.5-VL builds here without torchvision; its pixel inputs are built by hand, as its image
processor would lay them out (patches of 3 x 2 x 14 x 14 values, one grid row per image)."""

from __future__ import annotations

import pytest
import torch

from posttrain.rl.logprobs import ROW_COUNTS, collate, response_logprobs

transformers = pytest.importorskip("transformers")
IMAGE, START, END = 290, 292, 293
PATCH_DIM = 3 * 2 * 14 * 14


@pytest.fixture(scope="module")
def model():
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    torch.manual_seed(0)
    cfg = Qwen2_5_VLConfig(
        text_config=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                         num_key_value_heads=1, vocab_size=300, max_position_embeddings=512,
                         rope_scaling={"type": "mrope", "mrope_section": [4, 6, 6]}, eos_token_id=2),
        vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[0]),
        image_token_id=IMAGE, video_token_id=291, vision_start_token_id=START, vision_end_token_id=END)
    return Qwen2_5_VLForConditionalGeneration(cfg).eval()


def _row(text_before: int, grid: tuple[int, int, int], text_after: int, g: torch.Generator):
    tokens = grid[0] * grid[1] * grid[2] // 4  # a 2 x 2 merge of patches per image token
    ids = (torch.randint(3, 280, (text_before,), generator=g).tolist() + [START] + [IMAGE] * tokens + [END]
           + torch.randint(3, 280, (text_after,), generator=g).tolist())
    pixels = torch.randn(grid[0] * grid[1] * grid[2], PATCH_DIM, generator=g)
    return ids, pixels, torch.tensor([grid])


def _alone(model, prompt, response, pixels, grid) -> torch.Tensor:
    """Log-probs of `response` from one unpadded sequence, positions left to the model."""
    ids = torch.tensor([prompt + response])
    types = (ids == IMAGE).int()  # what the processor returns as mm_token_type_ids
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), pixel_values=pixels,
                       image_grid_thw=grid, mm_token_type_ids=types).logits[0, len(prompt) - 1:-1]
    return torch.log_softmax(logits.float(), -1).gather(-1, torch.tensor(response)[:, None])[:, 0]


def test_flattened_patches_follow_their_rows_and_mrope_positions_are_the_models(model):
    g = torch.Generator().manual_seed(1)
    rows = [_row(3, (1, 4, 4), 2, g), _row(1, (1, 4, 8), 5, g), _row(6, (1, 8, 4), 1, g)]
    responses = [torch.randint(3, 280, (n,), generator=g).tolist() for n in (4, 2, 3)]
    batch = collate([r[0] for r in rows], responses, pad_id=0)
    batch.vision = {"pixel_values": torch.cat([r[1] for r in rows]), "image_grid_thw": torch.cat([r[2] for r in rows]),
                    ROW_COUNTS: torch.tensor([1, 1, 1])}
    expected = [_alone(model, r[0], resp, r[1], r[2]) for r, resp in zip(rows, responses)]
    with torch.no_grad():
        whole = response_logprobs(model, batch)
        picked = response_logprobs(model, batch.select([2, 0]))  # a minibatch: rows' patches go with them
    for i, exp in enumerate(expected):
        torch.testing.assert_close(whole[i, :len(exp)], exp, atol=1e-5, rtol=0)
    for j, i in enumerate([2, 0]):
        torch.testing.assert_close(picked[j, :len(expected[i])], expected[i], atol=1e-5, rtol=0)
    # the 1-D positions from the attention mask (right for Llama-style models) are wrong here: the test sees it
    with torch.no_grad():
        vision = {k: v for k, v in batch.vision.items() if k != ROW_COUNTS}
        one_d = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                      **vision).logits
    P, R = batch.prompt_len, batch.response_mask.shape[1]
    lp_1d = torch.log_softmax(one_d[:, P - 1:P + R - 1].float(), -1).gather(-1, batch.input_ids[:, P:, None])[..., 0]
    assert (lp_1d[0, :4] - expected[0]).abs().max() > 1e-4  # 10x the tolerance above


def test_two_images_in_one_row_stay_together(model):
    g = torch.Generator().manual_seed(2)
    a, b = _row(2, (1, 4, 4), 1, g), _row(1, (1, 4, 4), 2, g)
    c = _row(2, (1, 4, 8), 1, g)
    two = (a[0] + b[0], torch.cat([a[1], b[1]]), torch.cat([a[2], b[2]]))  # one prompt, two images
    responses = [[5, 6, 7], [8, 9]]
    batch = collate([two[0], c[0]], responses, pad_id=0)
    batch.vision = {"pixel_values": torch.cat([two[1], c[1]]), "image_grid_thw": torch.cat([two[2], c[2]]),
                    ROW_COUNTS: torch.tensor([2, 1])}
    sub = batch.select([1, 0])
    assert sub.vision["image_grid_thw"].tolist() == [[1, 4, 8], [1, 4, 4], [1, 4, 4]]
    assert torch.equal(sub.vision["pixel_values"], torch.cat([c[1], two[1]]))
    with torch.no_grad():
        lp = response_logprobs(model, sub)
    torch.testing.assert_close(lp[1, :3], _alone(model, two[0], responses[0], two[1], two[2]), atol=1e-5, rtol=0)
