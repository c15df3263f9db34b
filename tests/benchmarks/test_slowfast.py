"""The SlowFast-vs-uniform bench's encodings: which frames each keeps, their markers, their token cost."""

from __future__ import annotations

import random

import pytest
from transformers import AutoProcessor

from benchmarks.slowfast import encode, headline_keys, still_row, uniform_fitting, uniform_indices
from posttrain.core.data import load_rows
from posttrain.core.media import load_video
from posttrain.core.video import processor_token_counter
from posttrain.tasks.tiny_vision import make_tiny_vision_model
from posttrain.tasks.visual import write_visual_task


def test_uniform_indices_spread_evenly_with_both_ends():
    assert uniform_indices(6, 6) == [0, 1, 2, 3, 4, 5]
    assert uniform_indices(6, 3) == [0, 2, 5] or uniform_indices(6, 3) == [0, 3, 5]
    assert uniform_indices(10, 2) == [0, 9]


def test_uniform_fitting_keeps_the_most_frames_within_the_budget():
    times = [i / 2 for i in range(8)]
    assert uniform_fitting(8, times, 7, lambda s: 3, budget=50) == uniform_indices(8, 5)  # 5 x 10 tokens
    assert uniform_fitting(8, times, 7, lambda s: 3, budget=49) == uniform_indices(8, 4)
    assert uniform_fitting(8, times, 7, lambda s: 3, budget=5) == [0]  # at least the first frame


def test_headline_keys_compare_at_equal_budget_and_find_the_cheapest_matching_uniform():
    per_mode = {"slowfast": {"accuracy": 0.80, "tokens_per_clip": 60.0},
                "uniform@slowfast": {"accuracy": 0.62, "tokens_per_clip": 58.0},
                "uniform:6": {"accuracy": 0.70, "tokens_per_clip": 90.0},
                "uniform:8": {"accuracy": 0.81, "tokens_per_clip": 120.0},
                "uniform:7": {"accuracy": 0.80, "tokens_per_clip": 105.0}}
    assert headline_keys(per_mode) == {"slowfast_minus_uniform_points": 18.0,
                                       "slowfast_token_fraction_at_equal_accuracy": pytest.approx(60 / 105, abs=1e-4)}
    per_mode["slowfast"]["accuracy"] = 0.9  # no uniform budget reaches it
    assert headline_keys(per_mode)["slowfast_token_fraction_at_equal_accuracy"] is None


def test_encodings_keep_their_frames_and_count_every_token(tmp_path):
    write_visual_task("visual-video-visits", tmp_path / "v.jsonl", 6, difficulty=2, seed=4)
    rows = load_rows(tmp_path / "v.jsonl")
    proc = AutoProcessor.from_pretrained(make_tiny_vision_model(rows, tmp_path / "m", layers=1))
    count = processor_token_counter(proc)

    def text_tokens(s):
        return len(proc.tokenizer(s, add_special_tokens=False)["input_ids"])

    for r in rows:
        n = len(r["video"]["frames"])
        sf, sf_tokens = encode(r, "slowfast", count, text_tokens, tmp_path / "packed")
        n_images = sf["prompt"].count("<image>")
        assert len(sf["images"]) == n_images < n  # fast runs packed into mosaics
        assert sf["prompt"].count("<slow ") == len(r["answer"].split())  # one slow frame per visit
        whole = [p for p in sf["images"] if p in r["video"]["frames"]]  # slow frames; the rest are mosaics
        assert len(whole) == sf["prompt"].count("<slow ") and (tmp_path / "packed").is_dir()
        markers = [p.split(">")[0] + ">" for p in sf["prompt"].split("<image>")[:-1]]
        assert sf_tokens == sum(count(56, 56) + text_tokens(m) for m in markers)
        half, half_tokens = encode(r, "uniform:3", count, text_tokens, tmp_path / "packed")
        assert len(half["images"]) == 3 and "<fast " not in half["prompt"] and half["answer"] == r["answer"]
        markers = [p.split(">")[0] + ">" for p in half["prompt"].split("<image>")[:-1]]
        assert half_tokens == sum(count(56, 56) + text_tokens(m) for m in markers)
        eq, eq_tokens = encode(r, "uniform@slowfast", count, text_tokens, tmp_path / "packed")
        assert eq_tokens <= sf_tokens and "<fast " not in eq["prompt"]
        assert set(eq["images"]) <= set(r["video"]["frames"])
        # training rows: a frame subset answers with what its frames show
        two, _ = encode(r, "uniform:2", count, text_tokens, tmp_path / "packed", kind="visual-video-visits")
        frames, _ = load_video(r["video"])
        shown = {frames[i][..., 0].tobytes() for i in (0, n - 1)}
        assert len(two["answer"].split()) == len(shown) and set(two["answer"].split()) <= set(r["answer"].split())
        still = still_row(r, random.Random(0), "visual-video-visits")
        assert len(still["images"]) == 1 and still["prompt"].count("<image>") == 1
        assert still["answer"] in r["answer"].split()
