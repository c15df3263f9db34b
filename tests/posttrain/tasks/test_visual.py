"""The offline visual tasks: rows meet the data contract, answers are what the pixels say, hints are true."""

from __future__ import annotations

import numpy as np
import pytest

from posttrain.core.data import load_rows
from posttrain.core.media import load_image, load_video
from posttrain.core.video import classify_frames
from posttrain.tasks.visual import COLOUR_NAMES, COLOURS, make_visual_rows, visible_answer, write_visual_task


def _blobs(img, colour_test) -> int:
    """Connected components of pixels passing colour_test (4-neighbour flood fill)."""
    a = np.asarray(img).astype(int)
    mask = colour_test(a)
    seen = np.zeros_like(mask)
    n = 0
    for y, x in zip(*np.nonzero(mask)):
        if seen[y, x]:
            continue
        n += 1
        stack = [(y, x)]
        while stack:
            cy, cx = stack.pop()
            if 0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1] and mask[cy, cx] and not seen[cy, cx]:
                seen[cy, cx] = True
                stack += [(cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)]
    return n


def _not_white(a):
    return (a < 200).any(axis=-1)


@pytest.mark.parametrize("kind", ["visual-quadrants", "visual-count", "visual-add", "visual-video",
                                  "visual-video-quadrants", "visual-video-visits", "visual-video-colours"])
def test_rows_load_through_the_contract_with_five_cumulative_hints(tmp_path, kind):
    train, held = write_visual_task(kind, tmp_path / "d" / "train.jsonl", 12, difficulty=3, seed=1,
                                    eval_out=tmp_path / "e" / "eval.jsonl", n_eval=4)
    assert (train, held) == (12, 4)
    rows = load_rows(tmp_path / "d" / "train.jsonl") + load_rows(tmp_path / "e" / "eval.jsonl")  # paths resolve
    assert len({r["id"] for r in rows}) == 16
    for r in rows:
        assert len(r["hints"]) == 5 and r["hints"][4].endswith(f"The answer is {r['answer']}.")
        assert all(r["hints"][k].rstrip(".") in r["hints"][k + 1] for k in range(4))  # cumulative


def test_count_answers_match_the_drawn_circles(tmp_path):
    rows = make_visual_rows("visual-count", 20, tmp_path, difficulty=4, seed=0, image_size=84)
    shapes_total = 0
    for r in rows:
        img = load_image(str(tmp_path / r["images"][0]))
        shapes = _blobs(img, _not_white)  # circles and squares never touch (placed 2r+2 apart)
        shapes_total += shapes
        assert shapes >= int(r["answer"]) >= 1
        left = int(r["hints"][2].split("left half has ")[1].rstrip("."))
        assert left <= int(r["answer"])
    assert shapes_total > sum(int(r["answer"]) for r in rows)  # difficulty 4 draws distractor squares


def _red(a):
    return (a[..., 0] > 200) & (a[..., 1] < 80) & (a[..., 2] < 80)


@pytest.mark.parametrize("size", [56, 112])
def test_quadrant_answers_are_the_quarters_holding_red(tmp_path, size):
    rows = make_visual_rows("visual-quadrants", 60, tmp_path, difficulty=5, seed=3, image_size=size)
    answers, distractors = set(), 0
    for r in rows:
        a = np.asarray(load_image(str(tmp_path / r["images"][0]))).astype(int)
        h = size // 2
        quarters = [a[y:y + h, x:x + h] for y in (0, h) for x in (0, h)]
        red = [bool(_red(q).any()) for q in quarters]
        assert all(_blobs(q, _not_white) <= 1 for q in quarters)  # at most one shape, inside its quarter
        assert _blobs(a, _red) == sum(red) == int(r["answer"])
        assert r["hints"][2].endswith(f"the top half has {sum(red[:2])}.")
        assert r["hints"][3].endswith(f"the bottom half has {sum(red[2:])}.")
        answers.add(r["answer"])
        distractors += _blobs(a, _not_white) - sum(red)
    assert answers == {"0", "1", "2", "3", "4"} and distractors > 0


@pytest.mark.parametrize("kind", ["visual-video", "visual-video-quadrants"])
def test_video_answer_is_the_number_of_frames_where_the_dot_moved(tmp_path, kind):
    rows = make_visual_rows(kind, 15, tmp_path, difficulty=3, seed=2)
    assert {len(r["video"]["frames"]) for r in rows} == {10}
    answers = set()
    for r in rows:
        video = {**r["video"], "frames": [str(tmp_path / p) for p in r["video"]["frames"]]}
        frames, times = load_video(video)
        changed = sum(not np.array_equal(a, b) for a, b in zip(frames, frames[1:]))
        assert changed == int(r["answer"]) and times[1] == 0.5
        if kind == "visual-video-quadrants":  # the dot is inside one quarter, a move changes the quarter
            quarters = [tuple(bool((f[y:y + 28, x:x + 28] < 200).any()) for y in (0, 28) for x in (0, 28))
                        for f in frames]
            assert all(sum(q) == 1 for q in quarters)
            assert sum(a != b for a, b in zip(quarters, quarters[1:])) == changed
        assert sum(classify_frames(frames)) == 1 + changed  # every move is a slow frame, the rest fast
        answers.add(r["answer"])
    assert len(answers) >= 3  # the answer varies


@pytest.mark.parametrize("difficulty", [1, 2, 4])
def test_visits_answer_is_the_sorted_quarters_and_one_frame_visits_occur(tmp_path, difficulty):
    rows = make_visual_rows("visual-video-visits", 40, tmp_path, difficulty=difficulty, seed=5)
    answers, dwell_one, max_visits = set(), 0, 0
    for r in rows:
        video = {**r["video"], "frames": [str(tmp_path / p) for p in r["video"]["frames"]]}
        frames, _ = load_video(video)
        assert len(frames) == 4 + 2 * difficulty
        quarters = [[q for q, (y, x) in enumerate([(0, 0), (0, 28), (28, 0), (28, 28)])
                     if (f[y:y + 28, x:x + 28] < 200).any()] for f in frames]
        assert all(len(q) == 1 for q in quarters)  # the dot sits inside one quarter
        seq = [q[0] for q in quarters]
        visits = [q for k, q in enumerate(seq) if k == 0 or q != seq[k - 1]]
        assert len(set(visits)) == len(visits)  # distinct quarters: missing any visit changes the answer
        assert r["answer"] == " ".join(str(q + 1) for q in sorted(visits))
        assert classify_frames(frames) == [k == 0 or seq[k] != seq[k - 1] for k in range(len(seq))]
        dwell = np.diff([k for k in range(len(seq)) if k == 0 or seq[k] != seq[k - 1]] + [len(seq)])
        dwell_one += int((dwell == 1).any())
        max_visits = max(max_visits, len(visits))
        answers.add(r["answer"])
    assert 2 <= max_visits == min(4, 1 + difficulty, (len(frames) + 1) // 2)  # the knob sets how many
    assert dwell_one >= 10 and len(answers) >= 5


def test_colours_answer_is_the_colours_of_the_visits_in_palette_order(tmp_path):
    rows = make_visual_rows("visual-video-colours", 30, tmp_path, difficulty=3, seed=6)
    for r in rows:
        frames, _ = load_video({**r["video"], "frames": [str(tmp_path / p) for p in r["video"]["frames"]]})
        seen = {tuple(int(v) for v in f.reshape(-1, 3)[(f.reshape(-1, 3) < 200).any(axis=1)][0]) for f in frames}
        names = [COLOUR_NAMES[COLOURS.index(c)] for c in seen]  # the dot's centre pixels, exact palette colours
        assert r["answer"] == " ".join(n for n in COLOUR_NAMES if n in names)
        assert sum(classify_frames(frames)) == len(seen)  # one slow frame per visit, one colour per visit


@pytest.mark.parametrize("kind", ["visual-video-colours", "visual-video-visits"])
def test_visible_answer_reads_only_the_given_frames(tmp_path, kind):
    rows = make_visual_rows(kind, 20, tmp_path, difficulty=2, seed=3)
    for r in rows:
        frames, _ = load_video({**r["video"], "frames": [str(tmp_path / p) for p in r["video"]["frames"]]})
        assert visible_answer(kind, frames) == r["answer"]  # all frames: the row's own answer
        slow = [f for f, s in zip(frames, classify_frames(frames)) if s]
        assert visible_answer(kind, slow) == r["answer"]  # the slow frames are the visit starts
        one = visible_answer(kind, frames[-1:])
        assert len(one.split()) == 1 and one in r["answer"].split()  # one frame: its own visit only
    with pytest.raises(ValueError, match="visual-video-visits and visual-video-colours"):
        visible_answer("visual-add", frames)


def test_seeded_and_knob_checked(tmp_path):
    a = make_visual_rows("visual-add", 5, tmp_path / "a", seed=7)
    b = make_visual_rows("visual-add", 5, tmp_path / "b", seed=7)
    assert [r["answer"] for r in a] == [r["answer"] for r in b]
    assert (tmp_path / "a" / a[0]["images"][0]).read_bytes() == (tmp_path / "b" / b[0]["images"][0]).read_bytes()
    with pytest.raises(ValueError, match="difficulty=6"):
        make_visual_rows("visual-count", 1, tmp_path, difficulty=6)
    with pytest.raises(ValueError, match="unknown visual task kind"):
        make_visual_rows("visual-sing", 1, tmp_path)
