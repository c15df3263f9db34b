"""The media half of the dataset contract: images and video in JSONL rows (posttrain/core/media.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from posttrain.core.data import DatasetError, load_rows
from posttrain.core.media import count_placeholders, decode_video_file, load_video


def _png(path, colour=(255, 0, 0), size=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return path


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def media_dir(tmp_path):
    _png(tmp_path / "img" / "a.png")
    _png(tmp_path / "img" / "b.png", (0, 255, 0))
    for i in range(3):
        _png(tmp_path / "clip" / f"{i:03d}.png", (i * 80, 0, 0))
    (tmp_path / "img" / "broken.png").write_bytes(b"not an image at all")
    return tmp_path


def test_paths_resolve_relative_to_the_jsonl_file(media_dir):
    d = media_dir / "data"
    d.mkdir()
    p = _jsonl(d / "rows.jsonl", [
        {"id": "i", "prompt": "<image> and <image>: how many?", "answer": "2", "images": ["../img/a.png", "../img/b.png"]},
        {"id": "v", "prompt": [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "when?"}]}],
         "answer": "1", "video": {"frames": [f"../clip/{i:03d}.png" for i in range(3)], "fps": 2}},
        {"id": "t", "prompt": "text only", "answer": "x"},
    ])
    rows = load_rows(p)
    assert rows[0]["images"] == [str((media_dir / "img" / n).resolve()) for n in ("a.png", "b.png")]
    frames, times = load_video(rows[1]["video"])
    assert times == [0.0, 0.5, 1.0] and frames[2].shape == (16, 16, 3) and frames[2][0, 0, 0] == 160


@pytest.mark.parametrize("row,msg", [
    ({"prompt": "<image>?", "images": ["img/missing.png"]}, r"images\[0\] 'img/missing.png': no such file"),
    ({"prompt": "<image>?", "images": ["img/broken.png"]}, r"images\[0\] .*broken.png' is not a readable image"),
    ({"prompt": "<image> <image>?", "images": ["img/a.png"]}, "2 <image> placeholder\\(s\\) but the row has 1 image"),
    ({"prompt": "what?", "images": ["img/a.png"]}, "0 <image> placeholder"),
    ({"prompt": "<image>?"}, "1 <image> placeholder\\(s\\) but the row has 0"),
    ({"prompt": "<video>?", "video": {"frames": ["clip/000.png"], "fps": 0}}, "fps must be a positive number"),
    ({"prompt": "<video>?", "video": {"frames": ["clip/000.png", "img/nope.png"], "fps": 1}},
     r"video frames\[1\] 'img/nope.png': no such file"),
    ({"prompt": "<video>?", "video": {"frames": [], "fps": 1}}, "non-empty list"),
    ({"prompt": "<video>?", "video": ["clip/000.png"]}, "field 'video' must be"),
    ({"prompt": "<video> <video>", "video": {"frames": ["clip/000.png"], "fps": 1}}, "2 <video> placeholder"),
    ({"prompt": "<image>", "images": "img/a.png"}, "field 'images' must be a list"),
])
def test_bad_media_names_file_row_and_media(media_dir, row, msg):
    p = _jsonl(media_dir / "rows.jsonl", [{"id": "ok", "prompt": "x", "answer": "1"}, {"id": "r7", "answer": "1", **row}])
    with pytest.raises(DatasetError, match=rf"rows\.jsonl:2: row 'r7': .*{msg}"):
        load_rows(p)


def test_placeholders_in_strings_messages_and_content_parts():
    assert count_placeholders("<image><image> <video>") == (2, 1)
    msgs = [{"role": "system", "content": "<image>"},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "and <image>"}]}]
    assert count_placeholders(msgs) == (3, 0)


def test_content_parts_must_be_known_kinds(tmp_path):
    p = _jsonl(tmp_path / "d.jsonl", [{"id": "a", "answer": "1", "prompt": [{"role": "user", "content": [{"type": "audio"}]}]}])
    with pytest.raises(DatasetError, match="d.jsonl:1: prompt message 0 .*content parts"):
        load_rows(p)


def test_a_video_file_decodes_and_samples_at_fps(tmp_path):
    cv2 = pytest.importorskip("cv2")
    path = str(tmp_path / "clip.avi")
    out = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
    for i in range(20):  # 2 s at 10 fps; frame i has blue level 10 * i (BGR)
        out.write(np.full((32, 32, 3), (10 * i, 0, 0), np.uint8))
    out.release()
    frames, times = decode_video_file(path, fps=2)
    assert times == pytest.approx([0.0, 0.5, 1.0, 1.5])
    assert abs(int(frames[1][0, 0, 2]) - 50) <= 4  # RGB now: blue is channel 2; frame 5; JPEG is lossy
    rows = load_rows(_jsonl(tmp_path / "d.jsonl", [{"id": "v", "prompt": "<video>", "answer": "", "video": {"file": "clip.avi"}}]))
    assert len(load_video(rows[0]["video"])[0]) == 20
    (tmp_path / "bad.avi").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="d2.jsonl:1: row 'v': video file .*could not decode"):
        load_rows(_jsonl(tmp_path / "d2.jsonl", [{"id": "v", "prompt": "<video>", "answer": "", "video": {"file": "bad.avi"}}]))
