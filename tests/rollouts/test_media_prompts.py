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
