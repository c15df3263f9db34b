"""SlowFast planning, worked by hand (posttrain/core/video.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from posttrain.core.video import (classify_frames, frame_marker, frame_sizes, mosaic, mosaic_grid, pack_fast_frames,
                                  patch_similarity, plan_packed_clip, plan_slowfast, plan_video, render_packed,
                                  uniform_plan, video_prompt_text)


def qwen_like(h: int, w: int) -> int:
    """A Qwen2-VL-shaped cost: one token per 28x28 cell."""
    return math.ceil(h / 28) * math.ceil(w / 28)


def test_patch_similarity_counts_agreeing_patches():
    a = np.zeros((28, 42, 3), np.uint8)  # a 2 x 3 grid of 14-px patches
    b = a.copy()
    b[:14, :14] = 255  # one patch of six changes completely
    assert patch_similarity(a, b) == pytest.approx(5 / 6)
    b2 = a.copy()
    b2[0, 0] = 255  # one pixel of a 196-pixel patch: mean diff 1/196 < 0.02, the patch agrees
    assert patch_similarity(a, b2) == 1.0
    assert patch_similarity(a, b2, tol=0.001) == pytest.approx(5 / 6)
    with pytest.raises(ValueError, match="share a size"):
        patch_similarity(a, a[:14])


def test_classify_compares_with_the_last_slow_frame_not_the_previous_frame():
    def frame(top=0, second=0):  # a 10 x 10 grid of 14-px patches: each changed patch is 1%
        f = np.zeros((140, 140), np.uint8)
        f[:14, : 14 * top] = 255
        f[14:28, : 14 * second] = 255
        return f
    # frame 1 slow; 4% changed from slow frame 0 -> fast; 8% from slow frame 0 -> slow (though only
    # 4% from the previous frame); 3% more than the new slow frame -> fast; 20% more -> slow.
    frames = [frame(), frame(4), frame(8), frame(8, 3), frame(10, 10)]
    assert classify_frames(frames) == [True, False, True, False, True]
    # at 0.9: 96%, 92% fast; 89% slow; then 91% from that new slow frame -> fast
    assert classify_frames(frames, threshold=0.9) == [True, False, False, True, False]
    assert classify_frames([]) == []


def test_frame_sizes_keep_aspect_and_never_upscale():
    assert frame_sizes(112, 112) == [(28, 28), (56, 56), (84, 84), (112, 112)]
    assert frame_sizes(60, 120, step=40) == [(20, 40), (40, 80), (60, 120)]  # native 120 always included
    assert frame_sizes(20, 20) == [(20, 20)]  # smaller than one step: native only


def test_plan_by_hand_1_slow_3_fast_budget_10():
    # Sizes 28/56/84/112 px cost 1/4/9/16. Smallest feasible slow budget B: floor(0.3 B) >= 1 -> B = 4.
    # B in 4..8: slow at 56 px (4), fast budget floor(0.3 B) <= 2 -> 28 px (1): total 4 + 3 = 7 <= 10.
    # B = 9: slow 84 px (9) + 3 fast (1) = 12 > 10. So B* = 8 and the plan spends 7 tokens.
    plan = plan_slowfast([True, False, False, False], [0, 0.5, 1.0, 1.5], 112, 112, qwen_like, budget=10)
    assert plan.slow_budget == 8 and plan.fast_budget == 2
    assert [(f.slow, f.height, f.tokens) for f in plan.frames] == [(True, 56, 4)] + [(False, 28, 1)] * 3
    assert plan.visual_tokens == 7 and plan.total_tokens == 7


def test_plan_by_hand_budget_12_finds_the_largest_slow_budget():
    # B = 9..13: slow 84 px (9); floor(0.3 B) = 2..3 -> fast 28 px (1): 12 <= 12.
    # B = 14: floor(4.2) = 4 -> fast 56 px (4): 9 + 12 = 21 > 12. B* = 13.
    plan = plan_slowfast([True, False, False, False], [0, 1, 2, 3], 112, 112, qwen_like, budget=12)
    assert (plan.slow_budget, plan.fast_budget, plan.visual_tokens) == (13, 3, 12)
    assert plan.frames[0].height == 84 and plan.frames[1].height == 28


def test_plan_counts_markers_and_caps_at_native_size():
    # Two slow frames, markers cost 2 tokens each: 16 + 16 + 4 = 36 fits 100; slow cannot exceed 112 px.
    plan = plan_slowfast([True, True], [0, 2], 112, 112, qwen_like, budget=100, text_tokens=lambda s: 2)
    assert plan.marker_tokens == 4 and plan.visual_tokens == 32 and plan.total_tokens == 36
    assert plan.slow_budget == 16 and all(f.height == 112 for f in plan.frames)


def test_plan_too_small_a_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="budget 3 is too small for 4 frames"):
        plan_slowfast([True, False, False, False], [0, 1, 2, 3], 112, 112, qwen_like, budget=3)
    with pytest.raises(ValueError, match="frame 1 slow"):
        plan_slowfast([False], [0], 112, 112, qwen_like, budget=3)


def test_a_constant_cost_processor_gives_fast_frames_the_same_cost():
    # Idefics3 rescales every image to one size: 7 tokens whatever the frame. Fast frames need
    # floor(0.3 B) >= 7 -> B >= 24 (floor(7.2) = 7); all frames cost 7.
    plan = plan_slowfast([True, False], [0, 1], 112, 112, lambda h, w: 7, budget=14)
    assert plan.slow_budget == 24  # the smallest feasible budget is also the largest useful one
    assert [f.tokens for f in plan.frames] == [7, 7] and plan.visual_tokens == 14


def test_uniform_plan_at_the_same_budget_and_the_prompt_text():
    plan = uniform_plan(4, [0, 1, 2, 3], 112, 112, qwen_like, budget=20)  # 5 per frame -> 56 px (4)
    assert [f.tokens for f in plan.frames] == [4] * 4 and plan.visual_tokens == 16
    sf = plan_slowfast([True, False], [0, 0.5], 112, 112, qwen_like, budget=10)
    assert video_prompt_text(sf) == "<slow 0.0s><image><fast 0.5s><image>"
    assert frame_marker(False, 12.34) == "<fast 12.3s>"


def test_mosaic_grid_is_the_smallest_whose_share_fits_the_fast_ratio():
    assert [mosaic_grid(r) for r in (1.0, 0.3, 0.25, 0.2, 0.12, 0.11)] == [1, 2, 2, 3, 3, 4]  # 1/9 > 0.11
    with pytest.raises(ValueError, match="fast_ratio=0"):
        mosaic_grid(0)


def test_fast_runs_are_packed_in_order_and_never_across_a_slow_frame():
    slow = [True, False, False, False, False, False, True, False, True, True]
    assert pack_fast_frames(slow, 4) == [[0], [1, 2, 3, 4], [5], [6], [7], [8], [9]]
    assert pack_fast_frames(slow, 1) == [[i] for i in range(10)]
    assert pack_fast_frames([True], 4) == [[0]]


def test_packed_plan_prices_every_image_with_the_counter_and_renders_mosaics():
    def frame(q):  # a 56-px frame, white, with one black 28-px quarter q
        f = np.full((56, 56, 3), 255, np.uint8)
        f[(q // 2) * 28:(q // 2) * 28 + 28, (q % 2) * 28:(q % 2) * 28 + 28] = 0
        return f
    qs = [0, 0, 0, 3, 3, 3, 3, 3, 3, 1]  # slow at 0, 3 and 9; fast runs of 2 and 5 frames
    frames, times = [frame(q) for q in qs], [i / 2 for i in range(10)]
    plan = plan_packed_clip(frames, times, lambda h, w: 7, text_tokens=len)
    assert [im.frames for im in plan.images] == [(0,), (1, 2), (3,), (4, 5, 6, 7), (8,), (9,)]
    assert [im.marker for im in plan.images] == ["<slow 0.0s>", "<fast 0.5s>", "<slow 1.5s>", "<fast 2.0s>",
                                                 "<fast 4.0s>", "<slow 4.5s>"]
    assert plan.grid == 2 and plan.visual_tokens == 6 * 7  # 10 frames in 6 images
    assert plan.marker_tokens == sum(len(im.marker) for im in plan.images) and plan.total_tokens == 42 + 66
    pics = [np.asarray(p) for p in render_packed(frames, plan)]
    assert all(p.shape == (56, 56, 3) for p in pics) and np.array_equal(pics[0], frames[0])
    # the 2-frame mosaic: cells 1 and 2 hold frame 1 and 2 halved (black top-left 14 px), cells 3-4 grey
    m = pics[1]
    assert (m[:14, :14] == 0).all() and (m[14:28, 14:28] == 255).all() and (m[:14, 28:42] == 0).all()
    assert (m[28:, :] == 128).all()
    with pytest.raises(ValueError, match="holds 1 to 4 frames"):
        mosaic(frames[:5], 2)


def test_plan_video_packs_on_fixed_size_encoders_and_resizes_on_the_others():
    # frames 0-2 black, 3-4 white: slow at 0 and 3, fast 1, 2 and 4
    frames = [np.full((56, 56, 3), 0 if i < 3 else 255, np.uint8) for i in range(5)]
    times = [i / 2 for i in range(5)]
    fixed = plan_video(frames, times, lambda h, w: 7, budget=100)  # Idefics3-like: every size costs 7
    assert [(im.frames, im.mosaic) for im in fixed.images] == [((0,), False), ((1, 2), True), ((3,), False),
                                                               ((4,), True)]
    assert fixed.grid == 2 and fixed.total_tokens == 4 * 7
    with pytest.raises(ValueError, match="need 28"):
        plan_video(frames, times, lambda h, w: 7, budget=27)
    # no budget: every frame whole, one image each, markers kept
    whole = plan_video(frames, times, lambda h, w: 7, budget=None)
    assert [im.frames for im in whole.images] == [(i,) for i in range(5)] and not any(im.mosaic for im in whole.images)
    assert [im.slow for im in whole.images] == [True, False, False, True, False]
    # a size-dependent cost (one token per 28-px cell): plan_clip's sizes, one image per frame
    sized = plan_video(frames, times, qwen_like, budget=11)  # slow 56 px (4 each), fast 28 px (1 each)
    assert [(im.height, im.tokens) for im in sized.images] == [(56, 4), (28, 1), (28, 1), (56, 4), (28, 1)]
    pics = render_packed(frames, sized)
    assert [p.size for p in pics] == [(56, 56), (28, 28), (28, 28), (56, 56), (28, 28)]
