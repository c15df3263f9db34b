"""The SlowFast-vs-uniform bench's encodings: which frames each keeps, their markers, their token cost."""

from __future__ import annotations

from transformers import AutoProcessor

from benchmarks.slowfast import encode, uniform_indices
from posttrain.core.data import load_rows
from posttrain.core.video import processor_token_counter
from posttrain.tasks.tiny_vision import make_tiny_vision_model
from posttrain.tasks.visual import write_visual_task


def test_uniform_indices_spread_evenly_with_both_ends():
    assert uniform_indices(6, 6) == [0, 1, 2, 3, 4, 5]
    assert uniform_indices(6, 3) == [0, 2, 5] or uniform_indices(6, 3) == [0, 3, 5]
    assert uniform_indices(10, 2) == [0, 9]


def test_encodings_keep_their_frames_and_count_every_token(tmp_path):
    write_visual_task("visual-video", tmp_path / "v.jsonl", 6, difficulty=1, seed=4)
    rows = load_rows(tmp_path / "v.jsonl")
    proc = AutoProcessor.from_pretrained(make_tiny_vision_model(rows, tmp_path / "m", layers=1))
    count = processor_token_counter(proc)

    def text_tokens(s):
        return len(proc.tokenizer(s, add_special_tokens=False)["input_ids"])

    for r in rows:
        n = len(r["video"]["frames"])
        sf, sf_tokens = encode(r, "slowfast", count, text_tokens)
        assert sf["images"] == r["video"]["frames"] and sf["prompt"].count("<image>") == n
        assert sf["prompt"].count("<slow ") == 1 + int(r["answer"])  # every move starts a slow frame
        half, half_tokens = encode(r, "uniform:3", count, text_tokens)
        assert len(half["images"]) == 3 and "<fast " not in half["prompt"] and half["answer"] == r["answer"]
        markers = [p.split(">")[0] + ">" for p in half["prompt"].split("<image>")[:-1]]
        assert half_tokens == sum(count(56, 56) + text_tokens(m) for m in markers)
        assert sf_tokens > half_tokens
