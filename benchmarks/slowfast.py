"""SlowFast vs uniform frame sampling at an equal visual token budget (issue 15, item 8).

Task: `visual-video-quadrants` (how many times did the dot move? The dot jumps between quarters
of the frame, one visual token each on the tiny model), whose answer lives in the frames where
something changes; `kind` can be `visual-video` (the dot anywhere). One tiny Idefics3 model is
SFT'd on training clips, each encoded one of three ways (a third each): SlowFast (every frame,
with a `<slow t>` or `<fast t>` marker from core/video.plan_clip), and uniform sampling of all
frames or of half of them (every kept frame marked as core/video.uniform_plan marks them). The
same model then answers the held-out clips under each encoding, greedily; tokens per clip are
visual tokens (from the processor's own counter) plus marker tokens (from the tokenizer).

Headline keys:
- `slowfast_minus_uniform_points`: accuracy points, SlowFast minus uniform sampling at the
  largest frame count whose tokens fit SlowFast's budget.
- `slowfast_token_fraction_at_equal_accuracy`: SlowFast's tokens / the fewest tokens at which
  uniform sampling reaches SlowFast's accuracy (None when no measured uniform budget does).

Caveat (docs/multimodal.md): Idefics3 resizes every frame to one size, so a fast frame costs as
much as a slow one, and SlowFast cannot save tokens on this model; at an equal budget both keep
every frame and differ only in their markers.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import log
from posttrain.core.config import load_config
from posttrain.core.data import load_rows, write_jsonl
from posttrain.core.media import load_video
from posttrain.core.video import frame_marker, plan_clip, processor_token_counter
from posttrain.phases import sft
from posttrain.tasks.tiny_vision import make_tiny_vision_model
from posttrain.tasks.visual import write_visual_task

ROOT = Path(__file__).resolve().parents[1]
QUESTION = "How many times did the dot move?"


class _Exact:
    """The `exact` verifier in-process (rewards/builtin/exact.py): no reward workers for a bench eval."""

    class _Result:
        def __init__(self, rewards: list[float]):
            self.rewards = rewards

    def score(self, texts: list[str], rows: list[dict[str, Any]]) -> "_Exact._Result":
        return self._Result([float(t.strip() == str(r["answer"]).strip()) for t, r in zip(texts, rows)])


def uniform_indices(n: int, k: int) -> list[int]:
    """k frame indices spread evenly over n frames, the first and last included (k >= 2)."""
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})


def encode(row: dict[str, Any], mode: str, count, text_tokens) -> tuple[dict[str, Any], int]:
    """The clip as an image row (markers and `<image>` slots spelled out) and its token cost.
    mode: "slowfast", or "uniform:K" (K evenly spaced frames)."""
    frames, times = load_video(row["video"])
    paths = row["video"]["frames"]
    if mode == "slowfast":
        plan = plan_clip(frames, times, count, 10**9, text_tokens=text_tokens)
        kept = [(f.index, f.marker, f.tokens) for f in plan.frames]
    else:
        h, w = np.asarray(frames[0]).shape[:2]
        kept = [(i, frame_marker(True, times[i]), int(count(h, w)))
                for i in uniform_indices(len(frames), int(mode.split(":")[1]))]
    text = "".join(m + "<image>" for _, m, _ in kept) + QUESTION
    tokens = sum(t + text_tokens(m) for _, m, t in kept)
    return ({"id": f"{row['id']}@{mode}", "prompt": text, "answer": row["answer"],
             "images": [paths[i] for i, _, _ in kept]}, tokens)


def run(out: Path, sizes, quick: bool = False, difficulty: int = 1, seed: int = 0,
        kind: str = "visual-video-quadrants") -> tuple[dict, dict]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rollouts.evaluate import hf_greedy_eval

    n_train, n_eval, steps = (96, 24, 4) if quick else (3000, 200, 200)
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    if not (data / "eval_clips.jsonl").is_file():
        write_visual_task(kind, data / "clips.jsonl", n_train, difficulty, seed,
                          eval_out=data / "eval_clips.jsonl", n_eval=n_eval)
    clips, held = load_rows(data / "clips.jsonl"), load_rows(data / "eval_clips.jsonl")  # absolute frame paths
    model_dir = out / "vlm"
    if not (model_dir / "config.json").is_file():
        make_tiny_vision_model(clips, model_dir, layers=4, seed=seed)
    processor = AutoProcessor.from_pretrained(model_dir)
    count = processor_token_counter(processor)

    def text_tokens(s: str) -> int:
        return len(processor.tokenizer(s, add_special_tokens=False)["input_ids"])

    n_frames = len(clips[0]["video"]["frames"])
    modes = ["slowfast", f"uniform:{n_frames}", f"uniform:{max(2, n_frames // 2)}"]
    rng = random.Random(seed)
    train = [encode(r, rng.choice(modes), count, text_tokens)[0] for r in clips]
    write_jsonl(data / "train.jsonl", train)
    sft_dir = out / "sft"
    if not (sft_dir / "final" / "config.json").is_file():
        log(f"slowfast: SFT {steps} steps on {len(train)} clips ({n_frames} frames, modes {modes})")
        cfg = load_config(sft.Config, ROOT / "configs" / "vision" / "sft.yaml", [
            "model.init=path", f"model.path={model_dir}", f"data.train={data / 'train.jsonl'}",
            "eval.stop_at_accuracy=null", f"train.max_steps={steps}", "train.max_length=256",
            "train.save_steps=100000"])
        sft.run(cfg, sft_dir)
    model = AutoModelForImageTextToText.from_pretrained(sft_dir / "final")
    processor = AutoProcessor.from_pretrained(sft_dir / "final")
    per_mode: dict[str, dict[str, float]] = {}
    for mode in modes:
        enc = [encode(r, mode, count, text_tokens) for r in held]
        res = hf_greedy_eval(model, processor, [e[0] for e in enc], _Exact(), max_new_tokens=3)
        per_mode[mode] = {"accuracy": res.accuracy, "tokens_per_clip": float(np.mean([e[1] for e in enc]))}
        log(f"slowfast: {mode}: accuracy {res.accuracy:.3f}, {per_mode[mode]['tokens_per_clip']:.1f} tokens/clip")
    sf = per_mode["slowfast"]
    uniform = sorted(((m, v) for m, v in per_mode.items() if m != "slowfast"), key=lambda mv: mv[1]["tokens_per_clip"])
    fitting = [v for _, v in uniform if v["tokens_per_clip"] <= sf["tokens_per_clip"]]
    equal_budget = fitting[-1] if fitting else uniform[0][1]
    matched = [v for _, v in uniform if v["accuracy"] >= sf["accuracy"]]
    headline = {
        "slowfast_minus_uniform_points": round(100 * (sf["accuracy"] - equal_budget["accuracy"]), 2),
        "slowfast_token_fraction_at_equal_accuracy":
            round(sf["tokens_per_clip"] / matched[0]["tokens_per_clip"], 4) if matched else None,
    }
    details = {"task": f"{kind} difficulty {difficulty}", "frames": n_frames, "train_clips": len(train),
               "eval_clips": len(held), "sft_steps": steps, "per_mode": per_mode,
               "equal_budget_uniform_tokens": equal_budget["tokens_per_clip"],
               "caveat": "Idefics3: every frame costs the same tokens at any size; SlowFast saves no tokens here"}
    return headline, details
