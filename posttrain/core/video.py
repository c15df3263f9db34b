"""SlowFast video encoding (Keye-VL 1.5), model-agnostic and pure.

A clip becomes a sequence of frames, each either *slow* (a key frame, more visual tokens)
or *fast* (a frame that barely differs from the last key frame, fewer tokens):

1. frame 1 is slow; each later frame is compared with the LAST SLOW frame by patch
   similarity; similarity >= `threshold` (0.95) makes it fast, else it is a new slow frame;
2. a fast frame gets `fast_ratio` (30%) of a slow frame's token budget;
3. a binary search finds the largest slow-frame budget whose clip total fits the budget;
4. a text marker with the kind and timestamp precedes every frame.

What a frame costs is the model's business: the planner is given `count_tokens(height,
width) -> int` and never a table. `processor_token_counter` builds that callable from a
transformers processor (the method vLLM itself calls to size its placeholders).

Where this departs from the paper (which gives no formula for these):
- Patch similarity here is the fraction of `patch`x`patch` pixel patches whose mean absolute
  difference (pixels in [0, 1]) is at most `tol`; the paper names a "patch-based similarity"
  without defining it.
- A frame's budget is met by resizing it (aspect kept, longest edge on a grid of `step`
  pixels, never above the native size); the largest size whose cost fits is taken. A
  processor that rescales every image to one size (Idefics3 / SmolVLM do) costs the same for
  every frame, so there fast frames cost as much as slow ones; docs/multimodal.md says so.
- Markers are plain text (`<slow 0.0s>`), not new special tokens, so any tokenizer reads them.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image

TokenCounter = Callable[[int, int], int]  # (height, width) -> visual tokens of one frame that size


def patch_similarity(a: np.ndarray, b: np.ndarray, patch: int = 14, tol: float = 0.02) -> float:
    """Fraction of the patch grid where frames `a` and `b` (H, W[, C], uint8 or floats in [0, 1])
    agree: a patch agrees when its mean absolute pixel difference is <= `tol`.

    >>> x = np.zeros((28, 28), np.uint8); y = x.copy(); y[:14, :14] = 255
    >>> patch_similarity(x, y)
    0.75
    """
    if a.shape != b.shape:
        raise ValueError(f"frames differ in shape: {a.shape} vs {b.shape}; a clip's frames must share a size")
    fa, fb = _unit(a), _unit(b)
    h, w = fa.shape[:2]
    ph, pw = min(patch, h), min(patch, w)
    gh, gw = h // ph, w // pw
    diff = np.abs(fa - fb)[: gh * ph, : gw * pw]
    diff = diff.reshape(gh, ph, gw, pw, -1).mean(axis=(1, 3, 4))  # (gh, gw) mean abs diff per patch
    return float((diff <= tol).mean())


def _unit(frame: np.ndarray) -> np.ndarray:
    f = np.asarray(frame)
    return f.astype(np.float32) / 255.0 if f.dtype == np.uint8 else f.astype(np.float32)


def classify_frames(frames: Sequence[np.ndarray], threshold: float = 0.95, patch: int = 14,
                    tol: float = 0.02) -> list[bool]:
    """True for slow frames: the first, and every frame whose similarity to the last slow frame
    is below `threshold`."""
    if not frames:
        return []
    slow, last = [True], frames[0]
    for frame in frames[1:]:
        is_slow = patch_similarity(last, frame, patch, tol) < threshold
        slow.append(is_slow)
        if is_slow:
            last = frame
    return slow


def frame_sizes(height: int, width: int, step: int = 28, min_edge: int | None = None) -> list[tuple[int, int]]:
    """Candidate (height, width) of a frame: aspect kept, longest edge min_edge, min_edge+step, ...,
    up to the native longest edge (always included); never upscaled."""
    long = max(height, width)
    lo = min(min_edge or step, long)
    edges = sorted(set(range(lo, long, step)) | {long})
    return [(max(1, round(height * e / long)), max(1, round(width * e / long))) for e in edges]


@dataclass(frozen=True)
class FramePlan:
    index: int  # position in the clip
    time_s: float
    slow: bool
    height: int
    width: int
    tokens: int  # visual tokens of this frame, from the model's counter

    @property
    def marker(self) -> str:
        return frame_marker(self.slow, self.time_s)


@dataclass(frozen=True)
class SlowFastPlan:
    frames: list[FramePlan]
    budget: int  # the clip's total token budget
    slow_budget: int  # the largest per-slow-frame budget that fits (the binary search's answer)
    fast_budget: int  # floor(fast_ratio * slow_budget)
    visual_tokens: int
    marker_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.visual_tokens + self.marker_tokens

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["total_tokens"] = self.total_tokens
        out["slow_frames"] = sum(f.slow for f in self.frames)
        out["fast_frames"] = sum(not f.slow for f in self.frames)
        return out


def frame_marker(slow: bool, time_s: float) -> str:
    """The text before a frame: its kind and timestamp."""
    return f"<{'slow' if slow else 'fast'} {time_s:.1f}s>"


def _largest_fitting(sizes: list[tuple[int, int]], cost: Callable[[int], int], budget: int) -> int | None:
    """Index of the largest size whose cost is <= budget (costs grow with size), else None."""
    lo, hi, best = 0, len(sizes) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if cost(mid) <= budget:
            best, lo = mid, mid + 1
        else:
            hi = mid - 1
    return best


def plan_slowfast(
    slow: Sequence[bool], times: Sequence[float], height: int, width: int, count_tokens: TokenCounter,
    budget: int, fast_ratio: float = 0.3, step: int = 28, min_edge: int | None = None,
    text_tokens: Callable[[str], int] | None = None,
) -> SlowFastPlan:
    """The frame sizes of a clip of `height` x `width` frames (slow flags from `classify_frames`)
    under a total token `budget`: the largest slow-frame budget B such that slow frames at the
    largest size costing <= B and fast frames at the largest size costing <= floor(fast_ratio * B),
    plus the markers (counted by `text_tokens` when given), fit. ValueError when even the
    smallest sizes do not fit."""
    if len(slow) != len(times) or not slow or not slow[0]:
        raise ValueError("need one time per frame, at least one frame, and frame 1 slow")
    sizes = frame_sizes(height, width, step, min_edge)
    cost = functools.lru_cache(maxsize=None)(lambda i: int(count_tokens(*sizes[i])))
    n_slow, n_fast = sum(slow), len(slow) - sum(slow)
    markers = sum(text_tokens(frame_marker(s, t)) for s, t in zip(slow, times)) if text_tokens else 0

    def fast_budget(b: int) -> int:
        return math.floor(fast_ratio * b + 1e-9)

    def total(b: int) -> int | None:
        s, f = _largest_fitting(sizes, cost, b), _largest_fitting(sizes, cost, fast_budget(b))
        if s is None or (n_fast and f is None):
            return None
        return n_slow * cost(s) + (n_fast * cost(f) if n_fast else 0) + markers

    # The smallest budget at which every frame has a size: slow needs cost(0); fast frames need
    # floor(fast_ratio * B) >= cost(0).
    b_min = cost(0)
    if n_fast:
        b_min = max(b_min, math.ceil(cost(0) / fast_ratio - 1e-9))
        while fast_budget(b_min) < cost(0):
            b_min += 1
    b_max = max(cost(len(sizes) - 1), b_min)
    if total(b_min) > budget:
        raise ValueError(f"token budget {budget} is too small for {len(slow)} frames ({n_slow} slow, {n_fast} fast): "
                         f"the smallest sizes need {total(b_min)}; raise the budget or sample fewer frames")
    lo, hi = b_min, b_max  # total(lo) fits; find the largest b in [lo, hi] that fits
    while lo < hi:
        mid = (lo + hi + 1) // 2
        t = total(mid)
        if t is not None and t <= budget:
            lo = mid
        else:
            hi = mid - 1
    s_idx, f_idx = _largest_fitting(sizes, cost, lo), _largest_fitting(sizes, cost, fast_budget(lo))
    frames = [FramePlan(i, float(t), bool(k), *sizes[s_idx if k else f_idx], cost(s_idx if k else f_idx))
              for i, (k, t) in enumerate(zip(slow, times))]
    return SlowFastPlan(frames, budget, lo, fast_budget(lo), sum(f.tokens for f in frames), markers)


def uniform_plan(n_frames: int, times: Sequence[float], height: int, width: int, count_tokens: TokenCounter,
                 budget: int, step: int = 28, min_edge: int | None = None,
                 text_tokens: Callable[[str], int] | None = None) -> SlowFastPlan:
    """The baseline at the same budget: every frame treated alike (all slow, one size)."""
    slow = [True] * n_frames
    sizes = frame_sizes(height, width, step, min_edge)
    markers = sum(text_tokens(frame_marker(True, t)) for t in times) if text_tokens else 0
    per_frame = (budget - markers) // max(n_frames, 1)
    idx = _largest_fitting(sizes, lambda i: int(count_tokens(*sizes[i])), per_frame)
    if idx is None:
        raise ValueError(f"token budget {budget} is too small for {n_frames} frames at the smallest size")
    tokens = int(count_tokens(*sizes[idx]))
    frames = [FramePlan(i, float(t), True, *sizes[idx], tokens) for i, t in enumerate(times)]
    return SlowFastPlan(frames, budget, per_frame, per_frame, tokens * n_frames, markers)


def video_prompt_text(plan: SlowFastPlan, image_token: str = "<image>") -> str:
    """What replaces a `<video>` placeholder: each frame's marker followed by one image slot."""
    return "".join(f.marker + image_token for f in plan.frames)


def processor_token_counter(processor: Any) -> TokenCounter:
    """`count_tokens(height, width)` answered by a transformers processor: the prompt tokens an
    image of that size expands to (`_get_num_multimodal_tokens`, the method vLLM sizes its
    placeholders with; Idefics3, Qwen2-VL/2.5-VL and most image-text processors implement it)."""
    if not hasattr(processor, "_get_num_multimodal_tokens"):
        raise ValueError(f"{type(processor).__name__} cannot say what an image costs "
                         "(no _get_num_multimodal_tokens); pass count_tokens explicitly")

    @functools.lru_cache(maxsize=None)
    def count(height: int, width: int) -> int:
        return int(processor._get_num_multimodal_tokens(image_sizes=[(height, width)])["num_image_tokens"][0])

    return count


def plan_clip(frames: Sequence[np.ndarray], times: Sequence[float], count_tokens: TokenCounter, budget: int,
              threshold: float = 0.95, fast_ratio: float = 0.3, step: int = 28, patch: int = 14, tol: float = 0.02,
              text_tokens: Callable[[str], int] | None = None) -> SlowFastPlan:
    """Classify a clip's frames and plan their sizes: the whole SlowFast encoding of one clip."""
    if not len(frames):
        raise ValueError("a clip needs at least one frame")
    height, width = np.asarray(frames[0]).shape[:2]
    slow = classify_frames(frames, threshold, patch, tol)
    return plan_slowfast(slow, times, height, width, count_tokens, budget, fast_ratio, step, text_tokens=text_tokens)


def resize_frames(frames: Sequence[np.ndarray], plan: SlowFastPlan) -> list[Image.Image]:
    """The frames at their planned sizes, as RGB images ready for a processor or an engine."""
    return [Image.fromarray(np.asarray(f)).convert("RGB").resize((p.width, p.height), Image.BICUBIC)
            for f, p in zip(frames, plan.frames)]


# --- Packing fast frames on a fixed-size encoder -------------------------------------------------
# Idefics3 / SmolVLM (without image splitting) resize every image to one size, so resizing a fast
# frame saves nothing. What does save tokens there: several fast frames shrunk into one image,
# a grid x grid mosaic, so each costs 1 / grid**2 of an image. `mosaic_grid` picks the smallest
# grid whose share fits `fast_ratio` (0.3 -> 2x2, a quarter each), and the processor's own
# counter prices every image, mosaic or not.


def mosaic_grid(fast_ratio: float) -> int:
    """The smallest g with 1 / g**2 <= fast_ratio: a fast frame's share of one mosaic image.

    >>> mosaic_grid(0.3), mosaic_grid(0.25), mosaic_grid(0.1), mosaic_grid(1.0)
    (2, 2, 4, 1)
    """
    if not 0 < fast_ratio <= 1:
        raise ValueError(f"fast_ratio={fast_ratio}: use a fraction in (0, 1]")
    g = 1
    while 1 / g**2 > fast_ratio + 1e-12:
        g += 1
    return g


def pack_fast_frames(slow: Sequence[bool], per_image: int) -> list[list[int]]:
    """Frame indices grouped into images, in clip order: every slow frame alone; every run of
    consecutive fast frames in chunks of at most `per_image`.

    >>> pack_fast_frames([True, False, False, False, True, True, False], per_image=2)
    [[0], [1, 2], [3], [4], [5], [6]]
    """
    if per_image < 1:
        raise ValueError(f"per_image={per_image}: need at least one frame per image")
    groups: list[list[int]] = []
    for i, is_slow in enumerate(slow):
        if is_slow or not groups or slow[groups[-1][0]] or len(groups[-1]) == per_image:
            groups.append([i])
        else:
            groups[-1].append(i)
    return groups


@dataclass(frozen=True)
class PackedImage:
    """One image of a clip's encoding, in prompt order: a frame, or a mosaic of fast frames."""

    frames: tuple[int, ...]  # clip indices shown in this image
    slow: bool
    time_s: float  # the first frame's time
    tokens: int  # visual tokens of the image, from the model's counter
    height: int = 0  # the size the image goes to the processor at (a mosaic: the frame size)
    width: int = 0
    mosaic: bool = False  # the frames shrunk into a grid x grid mosaic (fast frames, fixed-size encoders)

    @property
    def marker(self) -> str:
        return frame_marker(self.slow, self.time_s)


@dataclass(frozen=True)
class PackedPlan:
    images: list[PackedImage]
    grid: int  # fast frames per mosaic side
    visual_tokens: int
    marker_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.visual_tokens + self.marker_tokens

    def to_dict(self) -> dict[str, Any]:
        out = {"images": [{**asdict(im), "frames": list(im.frames), "marker": im.marker} for im in self.images],
               "grid": self.grid, "visual_tokens": self.visual_tokens, "marker_tokens": self.marker_tokens,
               "total_tokens": self.total_tokens}
        out["slow_frames"] = sum(len(im.frames) for im in self.images if im.slow)
        out["fast_frames"] = sum(len(im.frames) for im in self.images if not im.slow)
        out["mosaics"] = sum(im.mosaic for im in self.images)
        return out


def plan_packed_clip(frames: Sequence[np.ndarray], times: Sequence[float], count_tokens: TokenCounter,
                     threshold: float = 0.95, fast_ratio: float = 0.3, patch: int = 14, tol: float = 0.02,
                     text_tokens: Callable[[str], int] | None = None) -> PackedPlan:
    """SlowFast for a fixed-size encoder: slow frames (classify_frames) at full size, one image each;
    fast frames in `mosaic_grid(fast_ratio)`-square mosaics of the frame size; one marker per image.
    Every image is priced by `count_tokens` at the frame size (what the processor charges)."""
    if not len(frames) or len(frames) != len(times):
        raise ValueError("need at least one frame and one time per frame")
    height, width = np.asarray(frames[0]).shape[:2]
    grid = mosaic_grid(fast_ratio)
    slow = classify_frames(frames, threshold, patch, tol)
    tokens = int(count_tokens(height, width))
    images = [PackedImage(tuple(g), slow[g[0]], float(times[g[0]]), tokens, height, width, mosaic=not slow[g[0]])
              for g in pack_fast_frames(slow, grid * grid)]
    markers = sum(text_tokens(im.marker) for im in images) if text_tokens else 0
    return PackedPlan(images, grid, tokens * len(images), markers)


def mosaic(frames: Sequence[np.ndarray], grid: int, fill: int = 128) -> Image.Image:
    """`frames` (at most grid**2, one size) shrunk by `grid` and laid out in reading order on an
    image of the frame size; empty cells are grey (`fill`), so they never look like a frame."""
    if not 0 < len(frames) <= grid * grid:
        raise ValueError(f"a {grid}x{grid} mosaic holds 1 to {grid * grid} frames, got {len(frames)}")
    height, width = np.asarray(frames[0]).shape[:2]
    ch, cw = height // grid, width // grid
    out = Image.new("RGB", (width, height), (fill, fill, fill))
    for k, frame in enumerate(frames):
        cell = Image.fromarray(np.asarray(frame)).convert("RGB").resize((cw, ch), Image.BOX)
        out.paste(cell, ((k % grid) * cw, (k // grid) * ch))
    return out


def render_packed(frames: Sequence[np.ndarray], plan: PackedPlan) -> list[Image.Image]:
    """The plan's images: frames at their planned sizes, fast frames as mosaics where packed."""
    out = []
    for im in plan.images:
        if im.mosaic:
            out.append(mosaic([frames[i] for i in im.frames], plan.grid))
            continue
        pic = Image.fromarray(np.asarray(frames[im.frames[0]])).convert("RGB")
        out.append(pic if (pic.height, pic.width) == (im.height, im.width)
                   else pic.resize((im.width, im.height), Image.BICUBIC))
    return out


def fixed_size_encoder(count_tokens: TokenCounter, height: int, width: int, step: int = 28) -> bool:
    """True when a frame costs the same at every candidate size (Idefics3 / SmolVLM rescale every
    image to one size): there, shrinking a frame saves nothing and only packing does."""
    sizes = frame_sizes(height, width, step)
    return int(count_tokens(*sizes[0])) == int(count_tokens(*sizes[-1]))


def plan_video(frames: Sequence[np.ndarray], times: Sequence[float], count_tokens: TokenCounter,
               budget: int | None, threshold: float = 0.95, fast_ratio: float = 0.3, step: int = 28,
               text_tokens: Callable[[str], int] | None = None) -> PackedPlan:
    """The one SlowFast encoding of a clip, as images in prompt order; rollouts, evals, SFT rows
    and the benchmark all take it from here (rollouts/media.py).

    - `budget` None: every frame whole at its native size, with its slow / fast marker;
    - a model whose cost depends on the frame size (Qwen2.5-VL): `plan_clip`, one image per frame,
      slow and fast frames resized to fit `budget`;
    - a fixed-size encoder (`fixed_size_encoder`): `plan_packed_clip`, slow frames whole and
      fast frames in mosaics; ValueError when even that is over `budget`."""
    if not len(frames):
        raise ValueError("a clip needs at least one frame")
    height, width = np.asarray(frames[0]).shape[:2]
    if budget is not None and fixed_size_encoder(count_tokens, height, width, step):
        plan = plan_packed_clip(frames, times, count_tokens, threshold, fast_ratio, text_tokens=text_tokens)
        if plan.total_tokens > budget:
            raise ValueError(f"token budget {budget} is too small for this clip: slow frames whole and fast "
                             f"frames packed need {plan.total_tokens}; raise the budget or sample fewer frames")
        return plan
    sf = plan_clip(frames, times, count_tokens, 10**9 if budget is None else budget, threshold, fast_ratio, step,
                   text_tokens=text_tokens)
    return PackedPlan([PackedImage((f.index,), f.slow, f.time_s, f.tokens, f.height, f.width) for f in sf.frames],
                      1, sf.visual_tokens, sf.marker_tokens)
