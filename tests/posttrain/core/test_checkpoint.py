"""Atomic checkpoints (RELIABILITY.md #3): a kill at any file-system operation of a
save leaves `latest` naming a complete checkpoint, also when a step is saved twice."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from posttrain.core import checkpoint as ck


class _Fake:
    """Stands in for a HF model / tokenizer: writes one file."""

    def __init__(self, tag: str):
        self.tag = tag

    def save_pretrained(self, path, **kw):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / f"{type(self).__name__}.txt").write_text(self.tag)


class Killed(BaseException):
    """Not an OSError: nothing in the save may swallow it, like SIGKILL."""


FS_OPS = ("rename", "replace", "unlink", "rmdir", "mkdir")


@pytest.fixture
def kill_at(monkeypatch):
    """kill_at(n): the n-th file-system operation (rename, unlink, ...) from now never happens."""
    state = {"n": None, "count": 0}
    for name in FS_OPS:
        real = getattr(os, name)

        def op(*a, _real=real, **kw):
            if state["n"] is not None:
                if state["count"] == state["n"]:
                    raise Killed()
                state["count"] += 1
            return _real(*a, **kw)
        monkeypatch.setattr(os, name, op)

    def arm(n):
        state.update(n=n, count=0)
    return arm


def _save(root, step, tag, keep=2):
    return ck.save_checkpoint(root, step, _Fake(tag), _Fake(tag), {"tag": tag}, keep=keep)


def _tag(root) -> str:
    path = ck.latest_checkpoint(root)
    assert path is not None and (path / "model" / "_Fake.txt").read_text() == ck.load_trainer_state(path)["tag"]
    return ck.load_trainer_state(path)["tag"]


@pytest.mark.parametrize("second_step,keep", [(3, 2), (3, 1), (4, 2), (4, 1)])
def test_a_kill_at_any_operation_leaves_latest_complete(tmp_path, kill_at, second_step, keep):
    for n in range(200):
        root = tmp_path / f"k{n}"
        _save(root, 2, "old0", keep)
        _save(root, 3, "old", keep)
        kill_at(n)
        try:
            _save(root, second_step, "new", keep)
        except Killed:
            kill_at(None)
            assert _tag(root) in ("old", "new"), n
            _save(root, second_step + 1, "after", keep)  # the next save cleans up and works
            assert _tag(root) == "after"
            continue
        kill_at(None)
        assert _tag(root) == "new"
        assert n > 5  # the loop did reach every operation of a save
        break
    else:
        pytest.fail("the save never completed")


def test_resaving_a_step_keeps_one_folder_and_rotation_keeps_the_newest(tmp_path):
    for step, tag in [(1, "a"), (2, "b"), (2, "c"), (3, "d"), (3, "e"), (3, "f")]:
        _save(tmp_path, step, tag, keep=2)
    assert [p.name for p in ck.checkpoint_folders(tmp_path)] == ["step-000002.1", "step-000003.2"]
    assert _tag(tmp_path) == "f"
    assert not list(tmp_path.glob(".tmp-*"))


def test_save_numbers_sort_numerically(tmp_path):
    for name in ["step-000003.10", "step-000003.9", "step-000003", "step-000010"]:
        (tmp_path / name).mkdir()
    assert [p.name for p in ck.checkpoint_folders(tmp_path)] == [
        "step-000003", "step-000003.9", "step-000003.10", "step-000010"]
