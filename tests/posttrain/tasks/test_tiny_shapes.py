"""make_tiny_model's real-size knobs (configs/scale/): GQA heads, MLP width, embedding rows."""

from __future__ import annotations

import json

import pytest

from posttrain.tasks.addition import make_addition_rows
from posttrain.tasks.tiny import make_tiny_model


def test_kv_heads_intermediate_and_embedding_rows_shape_the_model(tmp_path):
    from transformers import AutoConfig

    rows = make_addition_rows(50, digits=2, terms=2, seed=0)
    out = make_tiny_model(rows, tmp_path / "m", hidden=64, layers=1, heads=2, head_dim=32, kv_heads=1,
                          intermediate=96, embedding_rows=1000)
    cfg = AutoConfig.from_pretrained(out)
    assert (cfg.num_key_value_heads, cfg.intermediate_size, cfg.vocab_size) == (1, 96, 1000)
    meta = json.loads((out / "posttrain_tiny.json").read_text())
    assert meta["embedding_rows"] == 1000 and meta["vocab_size"] < 1000
    # 1 layer: q 64x64+64, k/v 64x32+32 each, o 64x64, MLP 3 x 64x96, 2 norms; embeddings 1000x64 (tied); final norm
    assert meta["parameters"] == (64 * 64 + 64) + 2 * (64 * 32 + 32) + 64 * 64 + 3 * 64 * 96 + 2 * 64 + 1000 * 64 + 64
    with pytest.raises(ValueError, match="embedding_rows=10 is smaller than the tokenizer"):
        make_tiny_model(rows, tmp_path / "n", hidden=64, layers=1, heads=2, head_dim=32, embedding_rows=10)
