from pathlib import Path

import psutil
import pytest

PLUGINS = Path(__file__).with_name("faulty_plugins.py")


def plugin(name: str) -> str:
    return f"{PLUGINS}:{name}"


def descendants() -> list:
    """Child processes of this test process (Ray's are not ours: tests here do not start Ray)."""
    return [p for p in psutil.Process().children(recursive=True) if p.is_running()
            and p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture
def no_children_left():
    before = {p.pid for p in descendants()}
    yield
    left = [p for p in descendants() if p.pid not in before]
    assert not left, f"child processes left behind: {[(p.pid, p.cmdline()) for p in left]}"
