"""SlowFast vs uniform frame sampling at an equal visual token budget (issue 15, item 8).

Task: `visual-video-colours` at difficulty 2 (8 frames at 2 fps; the dot visits 2-3 distinct
quarters with a colour of its own each, about half the visits one frame long; "Which colours did
the dot have?", answer like "red blue"). Each frame is read like the still-image colour task
the tiny model learns, and a sampler that skips a one-frame visit loses part of the answer, so
which frames are kept matters. (`kind="visual-video-visits"` asks for the quarters instead.)

Tokens. The tiny Idefics3 model (no image splitting) resizes every image to 56 px, so a smaller
frame costs what a full one does. SlowFast's fast frames are therefore packed: each run of
consecutive fast frames goes into 2x2 mosaics (core/video.plan_packed_clip; a quarter of an
image per fast frame, within Keye's 30%), slow frames stay whole, one `<slow t>` / `<fast t>`
marker per image. Tokens per clip are the processor's own count for every image (mosaic or
not) plus the markers' tokens from the tokenizer.

Encodings (one tiny model, SFT'd on a mix: a third SlowFast, a third all frames, a third K
evenly spaced frames with K random in 2..N-1; uniform frames marked as core/video.uniform_plan
marks them):
- `slowfast`: every slow frame whole, the fast frames in mosaics;
- `uniform@slowfast`: per clip, the most evenly spaced whole frames whose tokens fit that clip's
  SlowFast tokens (the equal budget);
- `uniform:K`: K evenly spaced whole frames, K = N/2 + 1 .. N (the accuracy-vs-tokens curve).

Headline keys:
- `slowfast_minus_uniform_points`: accuracy points, `slowfast` minus `uniform@slowfast`.
- `slowfast_token_fraction_at_equal_accuracy`: SlowFast's tokens / the fewest tokens at which a
  `uniform:K` reaches SlowFast's accuracy (None when none does).
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

from benchmarks.common import log
from posttrain.core.config import load_config
from posttrain.core.data import load_rows, write_jsonl
from posttrain.core.media import load_video
from posttrain.core.video import frame_marker, processor_token_counter
from posttrain.phases import sft
from posttrain.tasks.tiny_vision import make_tiny_vision_model
from posttrain.tasks.visual import visible_answer, write_visual_task
from rollouts.media import expand_media, load_media
from rollouts.types import Media

ROOT = Path(__file__).resolve().parents[1]


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


def uniform_fitting(n: int, times, frame_tokens: int, text_tokens: Callable[[str], int], budget: int) -> list[int]:
    """The most evenly spaced frames (at least 1) whose images and markers fit `budget` tokens."""
    best = [0]
    for k in range(2, n + 1):
        idx = uniform_indices(n, k)
        if sum(frame_tokens + text_tokens(frame_marker(True, times[i])) for i in idx) > budget:
            break
        best = idx
    return best


def question(row: dict[str, Any]) -> str:
    return row["prompt"].replace("<video>", "")


def _image_path(slot, size, grid: int, name: str, media_dir: Path) -> str:
    """A planned image as a file: a frame's own path, or its mosaic written once under `media_dir`."""
    if isinstance(slot, str):
        return slot
    path = media_dir / f"{name}.png"
    if not path.is_file():
        media_dir.mkdir(parents=True, exist_ok=True)
        load_media(Media((slot,), (size,), grid))[0].save(path)
    return str(path.resolve())


def encode(row: dict[str, Any], mode: str, count, text_tokens, media_dir: Path,
           kind: str | None = None) -> tuple[dict[str, Any], int]:
    """The clip as an image row (markers and `<image>` slots spelled out) and its token cost.
    mode: "slowfast" (the rollouts' own encoding, rollouts/media.expand_media -> core/video.plan_video,
    at the all-frames budget; its mosaics written under `media_dir`), "uniform:K", or
    "uniform@slowfast". With `kind` (training rows), the answer is what the kept frames show
    (tasks/visual.visible_answer), so no label asks for a visit the input skipped."""
    frames, times = load_video(row["video"])
    paths = row["video"]["frames"]
    h, w = np.asarray(frames[0]).shape[:2]
    if mode == "slowfast":
        budget = sum(int(count(h, w)) + text_tokens(frame_marker(True, t)) for t in times)
        messages, media = expand_media(row, count, budget, text_tokens)
        parts = messages[0]["content"]
        markers = [p["text"] for p, nxt in zip(parts, parts[1:]) if p["type"] == "text" and nxt["type"] == "image"]
        images = [_image_path(slot, size, media.grid, f"{row['id']}-m{k:02d}", media_dir)
                  for k, (slot, size) in enumerate(zip(media.images, media.sizes))]
        shown = sorted({paths.index(p) for slot in media.images for p in ((slot,) if isinstance(slot, str) else slot)})
        text = "".join("<image>" if p["type"] == "image" else p["text"] for p in parts)
        tokens = sum(int(count(*size)) for size in media.sizes) + sum(text_tokens(m) for m in markers)
    else:
        if mode == "uniform@slowfast":
            budget = encode(row, "slowfast", count, text_tokens, media_dir)[1]
            shown = uniform_fitting(len(frames), times, int(count(h, w)), text_tokens, budget)
        else:
            shown = uniform_indices(len(frames), int(mode.split(":")[1]))
        markers = [frame_marker(True, times[i]) for i in shown]
        text = "".join(m + "<image>" for m in markers) + question(row)
        tokens = sum(int(count(h, w)) + text_tokens(m) for m in markers)
        images = [paths[i] for i in shown]
    answer = visible_answer(kind, [frames[i] for i in shown]) if kind else row["answer"]
    return {"id": f"{row['id']}@{mode}", "prompt": text, "answer": answer, "images": images}, tokens


def still_row(row: dict[str, Any], rng: random.Random, kind: str) -> dict[str, Any]:
    """One random frame of the clip, with its marker, as a one-image row answered from that frame:
    the warm-up that teaches the tiny model to read a frame before it reads clips."""
    frames, times = load_video(row["video"])
    i = rng.randrange(len(frames))
    return {"id": f"{row['id']}@still", "prompt": frame_marker(True, times[i]) + "<image>" + question(row),
            "answer": visible_answer(kind, [frames[i]]), "images": [row["video"]["frames"][i]]}


def _sft(model_dir: Path, train: Path, steps: int, out: Path) -> Path:
    """SFT with configs/vision/sft.yaml's optimiser, no early stop; the final model's folder."""
    if not (out / "final" / "config.json").is_file():
        cfg = load_config(sft.Config, ROOT / "configs" / "vision" / "sft.yaml", [
            "model.init=path", f"model.path={model_dir}", f"data.train={train}", "eval.stop_at_accuracy=null",
            f"train.max_steps={steps}", "train.max_length=256", "train.save_steps=100000"])
        sft.run(cfg, out)
    return out / "final"


def headline_keys(per_mode: dict[str, dict[str, float]]) -> dict[str, float | None]:
    """The two headline numbers from measured (accuracy, tokens per clip) per encoding."""
    sf = per_mode["slowfast"]
    curve = sorted((v for m, v in per_mode.items() if m.startswith("uniform:")), key=lambda v: v["tokens_per_clip"])
    matched = [v for v in curve if v["accuracy"] >= sf["accuracy"]]
    return {
        "slowfast_minus_uniform_points": round(100 * (sf["accuracy"] - per_mode["uniform@slowfast"]["accuracy"]), 2),
        "slowfast_token_fraction_at_equal_accuracy":
            round(sf["tokens_per_clip"] / matched[0]["tokens_per_clip"], 4) if matched else None,
    }


def run(out: Path, sizes, quick: bool = False, difficulty: int = 2, seed: int = 0,
        kind: str = "visual-video-colours") -> tuple[dict, dict]:
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from rollouts.evaluate import hf_greedy_eval

    n_train, n_eval, still_steps, steps = (96, 24, 2, 4) if quick else (3000, 200, 40, 100)
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

    n = len(clips[0]["video"]["frames"])
    rng = random.Random(seed)
    write_jsonl(data / "stills.jsonl", [still_row(r, rng, kind) for r in clips])
    train_modes = [rng.choice(["slowfast", f"uniform:{n}", f"uniform:{rng.randint(1, n - 1)}"]) for _ in clips]
    train = [encode(r, m, count, text_tokens, data / "packed", kind)[0] for r, m in zip(clips, train_modes)]
    write_jsonl(data / "train.jsonl", train)
    log(f"slowfast: SFT {still_steps} steps on single frames, then {steps} on {len(train)} clips "
        f"({n} frames; SlowFast, all frames, K frames)")
    warm = _sft(model_dir, data / "stills.jsonl", still_steps, out / "sft_stills")
    sft_dir = _sft(warm, data / "train.jsonl", steps, out / "sft").parent
    model = AutoModelForImageTextToText.from_pretrained(sft_dir / "final")
    processor = AutoProcessor.from_pretrained(sft_dir / "final")
    per_mode: dict[str, dict[str, float]] = {}
    for mode in ["slowfast", "uniform@slowfast", *(f"uniform:{k}" for k in range(n // 2 + 1, n + 1))]:
        enc = [encode(r, mode, count, text_tokens, data / "packed") for r in held]
        res = hf_greedy_eval(model, processor, [e[0] for e in enc], _Exact(), max_new_tokens=8)
        per_mode[mode] = {"accuracy": res.accuracy, "tokens_per_clip": float(np.mean([e[1] for e in enc])),
                          "images_per_clip": float(np.mean([len(e[0]["images"]) for e in enc]))}
        log(f"slowfast: {mode}: accuracy {res.accuracy:.3f}, {per_mode[mode]['tokens_per_clip']:.1f} tokens/clip")
    blank = data / "blank.png"  # every frame white: a model that reads its frames must lose its accuracy
    Image.new("RGB", Image.open(held[0]["video"]["frames"][0]).size, "white").save(blank)
    blanked = [{**e, "images": [str(blank)] * len(e["images"])}
               for e, _ in (encode(r, f"uniform:{n}", count, text_tokens, data / "packed") for r in held)]
    blank_acc = hf_greedy_eval(model, processor, blanked, _Exact(), max_new_tokens=8).accuracy
    log(f"slowfast: uniform:{n} with blank frames: accuracy {blank_acc:.3f}")
    details = {"task": f"{kind} difficulty {difficulty}", "frames": n, "train_clips": len(train),
               "eval_clips": len(held), "sft_steps_single_frames": still_steps, "sft_steps": steps,
               "per_mode": per_mode,
               f"uniform:{n}_blank_frames_accuracy": blank_acc,
               "majority_answer_share": Counter(r["answer"] for r in held).most_common(1)[0][1] / len(held),
               "fast_frames": "2x2 mosaics of 28-px fast frames, one 56-px image each (core/video.plan_video)"}
    return headline_keys(per_mode), details
