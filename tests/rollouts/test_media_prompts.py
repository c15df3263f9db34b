"""Rows with images and video become engine prompts (rollouts/media.py): slots in text order,
video frames spelled out with SlowFast markers, images loaded once at their planned sizes."""

from __future__ import annotations

import math

import pytest
from PIL import Image

from posttrain.core.data import load_rows
from posttrain.core.media import IMAGE_PLACEHOLDER
from rollouts.media import expand_media, load_media
from rollouts.types import Media


def _img(path, colour, size=(28, 28)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path.name


@pytest.fixture
def row(tmp_path):
    _img(tmp_path / "a.png", (255, 0, 0), (40, 20))
    frames = [_img(tmp_path / f"f{i}.png", c, (112, 112)) for i, c in enumerate([(0, 0, 0), (0, 0, 0), (255, 255, 255)])]
    import json
    (tmp_path / "d.jsonl").write_text(json.dumps({
        "id": "r", "answer": "1", "images": ["a.png"], "video": {"frames": frames, "fps": 2},
        "prompt": [{"role": "system", "content": "Look."},
                   {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "then <image> how many?"}]}],
    }) + "\n")
    return load_rows(tmp_path / "d.jsonl")[0]


def test_slots_in_text_order_with_slowfast_frames(row):
    # One token per 28-px cell (a Qwen-like cost); budget 20 for 3 frames: frame 2 repeats frame 1 (fast),
    # frame 3 differs (slow). Slow budgets 9..13 give 84-px slow frames (9) and a 28-px fast frame
    # (floor(0.3 B) <= 3 -> 1): 19 tokens; B = 14 lifts the fast frame to 56 px (4): 22 > 20.
    messages, media = expand_media(row, lambda h, w: math.ceil(h / 28) * math.ceil(w / 28), video_budget=20)
    assert messages[0] == {"role": "system", "content": [{"type": "text", "text": "Look."}]}
    kinds = [p["text"] if p["type"] == "text" else p["type"] for p in messages[1]["content"]]
    assert kinds == ["<slow 0.0s>", "image", "<fast 0.5s>", "image", "<slow 1.0s>", "image",
                     "then ", "image", " how many?"]
    assert [p.rsplit("/", 1)[1] for p in media.images] == ["f0.png", "f1.png", "f2.png", "a.png"]
    assert media.sizes == ((84, 84), (28, 28), (84, 84), (20, 40))
    imgs = load_media(media)
    assert [(i.height, i.width) for i in imgs] == [(84, 84), (28, 28), (84, 84), (20, 40)]


def test_text_rows_stay_text_and_videos_need_a_price(row):
    messages, media = expand_media({"id": "t", "prompt": "What is 2 + 2?"})
    assert media is None and messages == [{"role": "user", "content": "What is 2 + 2?"}]
    with pytest.raises(ValueError, match="pass count_tokens"):
        expand_media(row)
    with pytest.raises(ValueError, match="as frames"):
        expand_media({"id": "v", "prompt": IMAGE_PLACEHOLDER.replace("image", "video"), "video": {"file": "x.mp4"}},
                     lambda h, w: 1)


def test_media_is_hashable_so_samples_share_one_load():
    assert len({Media(("a",), ((1, 2),)), Media(("a",), ((1, 2),))}) == 1


def test_fixed_size_encoder_gets_fast_frames_as_mosaics_by_path(tmp_path):
    # One price for every size (Idefics3): with a budget, fast frames travel as a tuple of paths that
    # load_media turns into the 2x2 mosaic the SlowFast benchmark scores (core/video.plan_video).
    import json

    names = [_img(tmp_path / f"f{i}.png", c, (56, 56)) for i, c in enumerate([(0, 0, 0)] * 3 + [(255, 255, 255)])]
    (tmp_path / "d.jsonl").write_text(json.dumps({"id": "v", "prompt": "<video>?", "answer": "1",
                                                  "video": {"frames": names, "fps": 2}}) + "\n")
    row = load_rows(tmp_path / "d.jsonl")[0]
    messages, media = expand_media(row, lambda h, w: 7, video_budget=100)
    kinds = [p["text"] if p["type"] == "text" else p["type"] for p in messages[0]["content"]]
    assert kinds == ["<slow 0.0s>", "image", "<fast 0.5s>", "image", "<slow 1.5s>", "image", "?"]
    f = row["video"]["frames"]
    assert media.images == (f[0], (f[1], f[2]), f[3]) and media.grid == 2
    pics = load_media(media)
    assert [p.size for p in pics] == [(56, 56)] * 3
    import numpy as np
    m = np.asarray(pics[1])
    assert (m[:28, :] == 0).all() and (m[28:, :] == 128).all()  # two black frames on top, grey cells below
    assert len({media, expand_media(row, lambda h, w: 7, video_budget=100)[1]}) == 1  # still one load per prompt
    _, whole = expand_media(row, lambda h, w: 7)  # no budget: every frame whole
    assert whole.images == tuple(f)
