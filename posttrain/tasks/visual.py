"""Offline visual tasks: PIL-drawn images and frame sequences, with answers and five hint levels.

Five kinds, each verified by `exact` (the answer is an integer string):
- `visual-quadrants`: one image split in a 2x2 grid; each quarter is empty or holds one filled
  shape. "How many red shapes are in the image?" (0-4). At difficulty d shapes of up to d - 1
  other colours are distractors. Built for the tiny Idefics3 model: a 56-px image becomes
  2x2 visual tokens (patch 14, pixel shuffle 2), one per quarter, so the answer is a sum over
  what each token sees. Free-placed circles (`visual-count`) straddle the tokens, and the tiny
  model's SFT only learned to answer the most common count (docs/multimodal.md).
- `visual-video-quadrants`: `visual-video` with the dot centred in one quarter per frame; a move
  is a jump to another quarter.
- `visual-video-visits`: the dot visits 2 to min(4, difficulty + 1) distinct quarters, dwelling a variable number of
  frames in each, and about half the visits last one frame: "Which quarters did the dot visit?"
  (answer like "1 3 4", smallest first). Each frame is read like `visual-quadrants` reads an
  image, so the tiny model can learn it, and a sampler that skips a one-frame visit loses a
  quarter of the answer.
- `visual-video-colours`: the visits of `visual-video-visits`, each with its own colour, the dot
  drawn big over the whole frame: "Which colours did the dot have?" (answer like "red blue", in
  the order red green blue orange purple). Every visual token of a frame sees its colour (a
  dot in one quarter covered one token of 4, and the tiny model did not learn to read it even
  on single frames): the SlowFast benchmark's task (benchmarks/slowfast.py).
- `visual-count`: one image with a few filled circles (and, at higher difficulty, squares that
  do not count): "How many circles are in the image?"
- `visual-add`: two images with circles: "How many circles are in the two images together?"
- `visual-video`: a clip of frames where a dot jumps to a new place at some frames and stays
  still otherwise: "How many times did the dot move?" The answer lives only in the frames where
  something changes (the slow frames of SlowFast, core/video.py).

`difficulty` (1-5) is the knob: more objects, more distractor squares, more frames and moves.
Hints follow Keye-VL 1.5's levels and are cumulative like the addition task's (level k repeats
level k-1 and adds one true piece; level 5 gives the answer): 1 what to count, 2 how to split the
work, 3 a partial count, 4 all partial counts, 5 the answer.

Media are written as PNG files under `media_dir`; rows name them relative to `base_dir` (the
directory the JSONL goes to), as the data contract resolves them (core/media.py).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from posttrain.core.data import write_jsonl
from posttrain.tasks.addition import split_rows

KINDS = ("visual-quadrants", "visual-count", "visual-add", "visual-video", "visual-video-quadrants",
         "visual-video-visits", "visual-video-colours")
COLOURS = [(220, 40, 40), (40, 160, 60), (40, 80, 220), (230, 160, 20), (150, 50, 180)]
COLOUR_NAMES = ["red", "green", "blue", "orange", "purple"]


def _levels(difficulty: int) -> dict[str, int]:
    if not 1 <= difficulty <= 5:
        raise ValueError(f"difficulty={difficulty}: use 1 (easiest) to 5")
    return {"max_objects": 2 + difficulty, "distractors": difficulty - 1,
            "frames": 4 + 2 * difficulty, "max_moves": 1 + difficulty,
            "max_visits": min(4, 1 + difficulty)}


def _place(rng: random.Random, n: int, size: int, r: int, taken: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """`n` centres at least 2r+2 apart (and from `taken`), inside the image."""
    out: list[tuple[int, int]] = []
    for _ in range(2000):
        if len(out) == n:
            return out
        c = (rng.randint(r + 1, size - r - 2), rng.randint(r + 1, size - r - 2))
        if all((c[0] - x) ** 2 + (c[1] - y) ** 2 >= (2 * r + 2) ** 2 for x, y in out + taken):
            out.append(c)
    raise ValueError(f"cannot place {n} objects of radius {r} in a {size}-px image; raise image_size")


def draw_scene(rng: random.Random, circles: int, squares: int, size: int) -> tuple[Image.Image, list[tuple[int, int]]]:
    """A white image with `circles` filled circles and `squares` filled squares; the circle centres."""
    r = max(3, size // 14)
    centres = _place(rng, circles + squares, size, r, [])
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for i, (x, y) in enumerate(centres):
        box = (x - r, y - r, x + r, y + r)
        colour = rng.choice(COLOURS)
        (d.ellipse if i < circles else d.rectangle)(box, fill=colour)
    return img, centres[:circles]


def _count_hints(left: int, right: int, distractors: bool, what: str = "the image") -> list[str]:
    total = left + right
    pieces = [
        "count only the circles" + (", not the squares" if distractors else ""),
        f"count the left half of {what}, then the right half, and add",
        f"the left half has {left}",
        f"the right half has {right}",
        f"{left} + {right} = {total}. The answer is {total}",
    ]
    return ["Hint: " + "; ".join(pieces[:k]) + "." for k in range(1, 6)]


def _halves(centres: list[tuple[int, int]], size: int) -> tuple[int, int]:
    left = sum(x < size / 2 for x, _ in centres)
    return left, len(centres) - left


def _save(img: Image.Image, media_dir: Path, name: str, base_dir: Path) -> str:
    path = media_dir / name
    img.save(path)
    return os.path.relpath(path, base_dir)


def count_row(rng: random.Random, rid: str, lv: dict[str, int], size: int, media_dir: Path, base_dir: Path) -> dict[str, Any]:
    n = rng.randint(1, lv["max_objects"])
    squares = rng.randint(0, lv["distractors"])
    img, centres = draw_scene(rng, n, squares, size)
    return {"id": rid, "prompt": "<image>How many circles are in the image?", "answer": str(n),
            "images": [_save(img, media_dir, f"{rid}.png", base_dir)],
            "hints": _count_hints(*_halves(centres, size), squares > 0), "task": "visual-count"}


def add_row(rng: random.Random, rid: str, lv: dict[str, int], size: int, media_dir: Path, base_dir: Path) -> dict[str, Any]:
    counts = [rng.randint(1, lv["max_objects"]) for _ in range(2)]
    paths = []
    for j, n in enumerate(counts):
        img, _ = draw_scene(rng, n, rng.randint(0, lv["distractors"]), size)
        paths.append(_save(img, media_dir, f"{rid}-{j}.png", base_dir))
    a, b = counts
    pieces = ["count only the circles, in each image", "count the first image, then the second, and add",
              f"the first image has {a}", f"the second image has {b}", f"{a} + {b} = {a + b}. The answer is {a + b}"]
    return {"id": rid, "prompt": "<image><image>How many circles are in the two images together?",
            "answer": str(a + b), "images": paths,
            "hints": ["Hint: " + "; ".join(pieces[:k]) + "." for k in range(1, 6)], "task": "visual-add"}


def video_row(rng: random.Random, rid: str, lv: dict[str, int], size: int, media_dir: Path, base_dir: Path,
              fps: float = 2.0) -> dict[str, Any]:
    n_frames = lv["frames"]
    moves = sorted(rng.sample(range(1, n_frames), rng.randint(0, min(lv["max_moves"], n_frames - 1))))
    r = max(3, size // 10)
    colour = rng.choice(COLOURS)
    pos = _place(rng, 1, size, r, [])[0]
    paths = []
    for i in range(n_frames):
        if i in moves:
            pos = _place(rng, 1, size, r, [pos])[0]
        img = Image.new("RGB", (size, size), (255, 255, 255))
        ImageDraw.Draw(img).ellipse((pos[0] - r, pos[1] - r, pos[0] + r, pos[1] + r), fill=colour)
        paths.append(_save(img, media_dir, f"{rid}-f{i:02d}.png", base_dir))
    times = [f"{m / fps:.1f}s" for m in moves]
    k = len(moves)
    pieces = ["compare each frame with the one before; a move is a frame where the dot is somewhere new",
              "most frames repeat the previous one; only the changed frames matter",
              f"the first move is at {times[0]}" if moves else "the dot is in the same place in every frame",
              f"moves at {', '.join(times)}" if moves else "no frame differs from the first",
              f"It moved {k} times. The answer is {k}"]
    return {"id": rid, "prompt": "<video>How many times did the dot move?", "answer": str(k),
            "video": {"frames": paths, "fps": fps},
            "hints": ["Hint: " + "; ".join(pieces[:j]) + "." for j in range(1, 6)], "task": "visual-video"}


TARGET = COLOURS[0]  # red: the colour visual-quadrants counts
QUADRANTS = ("top left", "top right", "bottom left", "bottom right")


def quadrant_scene(rng: random.Random, cells: list[tuple[int, int, int] | None], size: int) -> Image.Image:
    """A white image whose quarter i holds a filled shape of colour cells[i] (None: empty)."""
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    half = size // 2
    for i, colour in enumerate(cells):
        if colour is None:
            continue
        r = rng.randint(max(3, half * 2 // 7), max(3, half * 3 // 7))  # 8-12 px in a 28-px quarter
        cx = (i % 2) * half + rng.randint(r + 1, half - r - 1)
        cy = (i // 2) * half + rng.randint(r + 1, half - r - 1)
        (d.ellipse if rng.random() < 0.5 else d.rectangle)((cx - r, cy - r, cx + r, cy + r), fill=colour)
    return img


def quadrants_row(rng: random.Random, rid: str, lv: dict[str, int], size: int, media_dir: Path,
                  base_dir: Path) -> dict[str, Any]:
    n = rng.randint(0, 4)  # uniform answer: the most common answer is right on ~20% of rows
    red = set(rng.sample(range(4), n))
    others = COLOURS[1:lv["distractors"] + 1]
    cells = [TARGET if i in red else (rng.choice(others) if others and rng.random() < 0.5 else None)
             for i in range(4)]
    img = quadrant_scene(rng, cells, size)
    top, bottom = len(red & {0, 1}), len(red & {2, 3})
    pieces = ["count only the red shapes" + (", not the shapes of other colours" if others else ""),
              "each quarter of the image holds at most one shape; count the top half, then the bottom half, and add",
              f"the top half has {top}", f"the bottom half has {bottom}",
              f"{top} + {bottom} = {n}. The answer is {n}"]
    return {"id": rid, "prompt": "<image>How many red shapes are in the image?", "answer": str(n),
            "images": [_save(img, media_dir, f"{rid}.png", base_dir)],
            "hints": ["Hint: " + "; ".join(pieces[:k]) + "." for k in range(1, 6)], "task": "visual-quadrants"}


def quadrant_video_row(rng: random.Random, rid: str, lv: dict[str, int], size: int, media_dir: Path,
                       base_dir: Path, fps: float = 2.0) -> dict[str, Any]:
    """`visual-video-quadrants`: like `visual-video`, but the dot sits centred in one quarter of
    the frame and a move is a jump to another quarter, so on the tiny Idefics3 model (one visual
    token per quarter) a move changes which token holds the dot."""
    n_frames = lv["frames"]
    moves = sorted(rng.sample(range(1, n_frames), rng.randint(0, min(lv["max_moves"], n_frames - 1))))
    half, colour, q = size // 2, rng.choice(COLOURS), rng.randrange(4)
    r = half * 2 // 5
    paths, where = [], []
    for i in range(n_frames):
        if i in moves:
            q = rng.choice([x for x in range(4) if x != q])
        cx, cy = (q % 2) * half + half // 2, (q // 2) * half + half // 2
        img = Image.new("RGB", (size, size), (255, 255, 255))
        ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        paths.append(_save(img, media_dir, f"{rid}-f{i:02d}.png", base_dir))
        where.append(QUADRANTS[q])
    k = len(moves)
    times = [f"{m / fps:.1f}s" for m in moves]
    pieces = ["compare each frame with the one before; a move is a frame where the dot is in another quarter",
              "most frames repeat the previous one; only the changed frames matter",
              f"the dot starts in the {where[0]} quarter",
              f"moves at {', '.join(times)}" if moves else "no frame differs from the first",
              f"It moved {k} times. The answer is {k}"]
    return {"id": rid, "prompt": "<video>How many times did the dot move?", "answer": str(k),
            "video": {"frames": paths, "fps": fps},
            "hints": ["Hint: " + "; ".join(pieces[:j]) + "." for j in range(1, 6)], "task": "visual-video-quadrants"}


def dwell_lengths(rng: random.Random, n_frames: int, visits: int) -> list[int]:
    """Frames spent on each of `visits` visits (sum `n_frames`): each visit is short (one frame)
    with probability 1/2, never all of them; the long ones split the rest, at least 2 frames each."""
    short = [rng.random() < 0.5 for _ in range(visits)]
    if all(short):
        short[rng.randrange(visits)] = False
    n_long, rest = visits - sum(short), n_frames - sum(short)
    # a random composition of `rest` into n_long parts of >= 2: cut `rest - n_long` into parts of >= 1
    cuts = sorted(rng.sample(range(1, rest - n_long), n_long - 1))
    longs = iter(b - a + 1 for a, b in zip([0] + cuts, cuts + [rest - n_long]))
    return [1 if s else next(longs) for s in short]


def visits_row(rng: random.Random, rid: str, lv: dict[str, int], size: int, media_dir: Path,
               base_dir: Path, fps: float = 2.0, ask: str = "quarters") -> dict[str, Any]:
    """`visual-video-visits`: the dot visits distinct quarters (numbered 1-4 in reading order),
    centred in each as in `visual-video-quadrants`; the answer is the visited quarters, smallest
    first. A set, not the visit order: each quarter's answer is an OR over frames, which a tiny
    model reads per frame, where an ordered answer asks it to index the k-th visit.
    `ask="colours"` (`visual-video-colours`): each visit has its own colour and the dot is drawn
    over the whole frame (radius 0.45 x size), so each of the tiny model's 4 visual tokens sees
    the colour; the answer is the colours seen, in COLOUR_NAMES order."""
    n_frames = lv["frames"]
    # at most (n + 1) // 2 visits, so one short visit and the long ones (>= 2 frames) always fit
    visits = rng.sample(range(4), rng.randint(2, min(lv["max_visits"], (n_frames + 1) // 2)))
    dwell = dwell_lengths(rng, n_frames, len(visits))
    if ask == "colours":
        colours = rng.sample(range(len(COLOURS)), len(visits))
    else:
        colours = [rng.randrange(len(COLOURS))] * len(visits)
    half = size // 2
    paths, i = [], 0
    for q, c, d in zip(visits, colours, dwell):
        if ask == "colours":  # one big dot over the whole frame: every visual token sees its colour
            cx, cy, r = half, half, size * 9 // 20
        else:
            cx, cy, r = (q % 2) * half + half // 2, (q // 2) * half + half // 2, half * 2 // 5
        img = Image.new("RGB", (size, size), (255, 255, 255))
        ImageDraw.Draw(img).ellipse((cx - r, cy - r, cx + r, cy + r), fill=COLOURS[c])
        for _ in range(d):
            paths.append(_save(img, media_dir, f"{rid}-f{i:02d}.png", base_dir))
            i += 1
    starts = [sum(dwell[:k]) / fps for k in range(len(dwell))]
    if ask == "colours":
        answer = " ".join(COLOUR_NAMES[c] for c in sorted(colours))
        seen = [COLOUR_NAMES[c] for c in colours]
        first = ["name the dot's colour in every frame; the answer lists the colours in the order "
                 + " ".join(COLOUR_NAMES)]
    else:
        answer = " ".join(str(q + 1) for q in sorted(visits))
        seen = [f"quarter {q + 1}" for q in visits]
        first = ["the quarters are numbered 1 top left, 2 top right, 3 bottom left, 4 bottom right; "
                 "read the dot's quarter in every frame"]
    pieces = first + ["a visit may last a single frame; the frames where the picture changes start the visits",
                      f"the first visit is {seen[0]}",
                      "visits start at " + ", ".join(f"{t:.1f}s ({v})" for t, v in zip(starts, seen)),
                      f"In order, that is {answer}. The answer is {answer}"]
    question = "Which colours did the dot have?" if ask == "colours" else "Which quarters did the dot visit?"
    return {"id": rid, "prompt": "<video>" + question, "answer": answer, "video": {"frames": paths, "fps": fps},
            "hints": ["Hint: " + "; ".join(pieces[:j]) + "." for j in range(1, 6)],
            "task": "visual-video-colours" if ask == "colours" else "visual-video-visits"}


def colour_visits_row(rng: random.Random, rid: str, lv: dict[str, int], size: int, media_dir: Path,
                      base_dir: Path) -> dict[str, Any]:
    return visits_row(rng, rid, lv, size, media_dir, base_dir, ask="colours")


def visible_answer(kind: str, frames: list[Any]) -> str:
    """The `visual-video-visits` / `visual-video-colours` answer a viewer of only `frames` (a subset
    of a clip's frames, RGB arrays or images) would give, read off the pixels: the quarters or the
    palette colours of the dot in those frames. Training on a frame subset with this answer, not
    the whole clip's, keeps every label readable from its input (benchmarks/slowfast.py)."""
    quarters, colours = set(), set()
    for frame in frames:
        a = np.asarray(frame)[..., :3]
        ys, xs = np.nonzero((a != 255).any(-1))
        if not len(ys):
            continue
        h, w = a.shape[:2]
        quarters.add(int(2 * (ys.mean() >= h / 2) + (xs.mean() >= w / 2)))
        colours.add(COLOURS.index(tuple(int(v) for v in a[ys[len(ys) // 2], xs[len(xs) // 2]])))
    if kind == "visual-video-colours":
        return " ".join(COLOUR_NAMES[c] for c in sorted(colours))
    if kind == "visual-video-visits":
        return " ".join(str(q + 1) for q in sorted(quarters))
    raise ValueError(f"visible_answer reads visual-video-visits and visual-video-colours frames, not {kind!r}")


MAKERS = {"visual-quadrants": quadrants_row, "visual-count": count_row, "visual-add": add_row,
          "visual-video": video_row, "visual-video-quadrants": quadrant_video_row,
          "visual-video-visits": visits_row, "visual-video-colours": colour_visits_row}


def make_visual_rows(kind: str, n: int, base_dir: str | Path, difficulty: int = 2, seed: int = 0,
                     image_size: int = 56, prefix: str | None = None, media_name: str = "media"
                     ) -> list[dict[str, Any]]:
    """`n` rows of a visual task; their images go to BASE_DIR/MEDIA_NAME/, named relative to BASE_DIR."""
    if kind not in MAKERS:
        raise ValueError(f"unknown visual task kind {kind!r}; choose one of {', '.join(KINDS)}")
    lv = _levels(difficulty)
    base_dir = Path(base_dir)
    media_dir = base_dir / media_name
    media_dir.mkdir(parents=True, exist_ok=True)
    prefix = prefix or kind.split("-")[1]
    rng = random.Random(f"{kind}:{difficulty}:{seed}:{image_size}")
    return [MAKERS[kind](rng, f"{prefix}-{i:06d}", lv, image_size, media_dir, base_dir) for i in range(n)]


def relocate(rows: list[dict[str, Any]], from_dir: str | Path, to_dir: str | Path) -> list[dict[str, Any]]:
    """The rows with media paths rewritten relative to `to_dir` (a JSONL written elsewhere)."""
    def move(p: str) -> str:
        return os.path.relpath(Path(from_dir) / p, to_dir)

    out = []
    for row in rows:
        row = dict(row)
        if row.get("images"):
            row["images"] = [move(p) for p in row["images"]]
        if row.get("video") and "frames" in row["video"]:
            row["video"] = {**row["video"], "frames": [move(p) for p in row["video"]["frames"]]}
        out.append(row)
    return out


def write_visual_task(kind: str, out: Path, n: int, difficulty: int = 2, seed: int = 0, image_size: int = 56,
                      eval_out: Path | None = None, n_eval: int = 0) -> tuple[int, int]:
    """Write OUT (and EVAL_OUT, held out, media shared) with media in OUT's directory; (train, eval) row counts."""
    out = Path(out)
    rows = make_visual_rows(kind, n + (n_eval if eval_out else 0), out.parent, difficulty, seed, image_size,
                            media_name=f"{out.stem}-media")
    held: list[dict[str, Any]] = []
    if eval_out:
        rows, held = split_rows(rows, n_eval, seed)
        write_jsonl(eval_out, relocate(held, out.parent, Path(eval_out).parent))
    write_jsonl(out, rows)
    return len(rows), len(held)


DEMO_KIND, DEMO_DIFFICULTY = "visual-quadrants", 3


def make_visual_demo_data(out: Path, n_train: int, n_eval: int, seed: int) -> tuple[Path, Path]:
    """`make demo-vision`'s task (visual-quadrants, difficulty 3: two distractor colours) in
    OUT/train.jsonl and OUT/eval.jsonl; the held-out rows' images are drawn apart, never trained on."""
    out = Path(out)
    write_visual_task(DEMO_KIND, out / "train.jsonl", n_train, DEMO_DIFFICULTY, seed,
                      eval_out=out / "eval.jsonl", n_eval=n_eval)
    return out / "train.jsonl", out / "eval.jsonl"
