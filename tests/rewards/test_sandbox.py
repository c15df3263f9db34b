"""Sandboxed code execution: what model-written code cannot do, and limits that hold."""

import os

import pytest

from rewards.resolve import resolve_reward
from rewards.sandbox import run_tests
from tests.rewards.conftest import descendants

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def _secret(monkeypatch, no_children_left):
    monkeypatch.setenv("POSTTRAIN_TEST_SECRET", "hunter2")


def run(code, tests=("assert True",), **kw):
    kw.setdefault("timeout_s", 5)
    return run_tests(code, list(tests), **kw)


def test_passing_and_failing_tests():
    r = run("def add(a, b):\n    return a + b", ["assert add(1, 2) == 3", "assert add(2, 2) == 5"])
    assert (r.passed, r.total, r.status) == (1, 2, "ok")


@pytest.mark.parametrize("code", [
    "raise ValueError('broken')",
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "print('x 0 1')\nimport sys\nsys.stdout.write('PASSED\\n')\nraise SystemExit(0)",
], ids=["exception", "sys_exit_0", "os_exit_0", "fake_output"])
def test_exceptions_and_early_exits_never_pass(code):
    assert run(code).passed == 0


def test_exit_inside_a_test_is_not_a_pass():
    assert run("x = 1", ["import sys; sys.exit(0)", "import os; os._exit(0)"]).passed == 0


def test_cannot_read_outside_its_dir(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret")
    os.chmod(tmp_path, 0o755)
    assert run(f"data = open({str(secret)!r}).read()", ["assert data == 's3cret'"]).passed == 0
    assert run("import os\nx = os.listdir('/')", ["assert x"]).passed == 0
    assert run("x = open('/etc/hostname').read()", ["assert x"]).passed == 0
    assert run("import os\nos.symlink('/etc/passwd', 'p')\nx = open('p').read()", ["assert x"]).passed == 0
    # Its own directory works.
    assert run("open('a.txt', 'w').write('hi')\nx = open('a.txt').read()", ["assert x == 'hi'"]).passed == 1


def test_cannot_read_the_parents_environment():
    assert run("import os", ["assert os.environ.get('POSTTRAIN_TEST_SECRET') == 'hunter2'"]).passed == 0
    code = "import os\nx = open(f'/proc/{os.getppid()}/environ', 'rb').read()"
    assert run(code, ["assert b'hunter2' in x"]).passed == 0
    assert run("import os\nx = dict(os.environ)", ["assert 'PATH' in x and 'POSTTRAIN_TEST_SECRET' not in x"]).passed == 1


@pytest.mark.parametrize("code", [
    "import socket\ns = socket.socket()",
    "import _socket\ns = _socket.socket()",
    "import urllib.request\nurllib.request.urlopen('http://1.1.1.1', timeout=2)",
], ids=["socket", "_socket", "urllib"])
def test_cannot_open_sockets(code):
    assert run(code).passed == 0


@pytest.mark.parametrize("code", [
    "import os\nwhile True:\n    os.fork()",
    "import subprocess\nsubprocess.run(['sh', '-c', ':(){ :|:& };:'])",
    "import os\nos.system('sleep 100 &')",
    "import multiprocessing\nmultiprocessing.Process(target=print).start()",
    "import threading, time\nts = [threading.Thread(target=time.sleep, args=(30,)) for _ in range(1000)]\n"
    "[t.start() for t in ts]",
], ids=["fork", "subprocess", "system", "multiprocessing", "threads"])
def test_cannot_fork_bomb(code):
    before = len(descendants())
    assert run(code, timeout_s=2).passed == 0
    assert len(descendants()) == before


def test_cannot_kill_its_parent():
    parent = os.getpid()
    for code in [f"import os\nos.kill({parent}, 9)", "import os\nos.kill(os.getppid(), 9)",
                 f"import signal\nsignal.pidfd_send_signal(0, 9)", "import ctypes"]:
        assert run(code).passed == 0
    assert os.getpid() == parent  # still alive


def test_no_frame_introspection_to_find_the_nonce():
    for code in ["import sys\nf = sys._getframe(1)", "import inspect\nf = inspect.currentframe()",
                 "try:\n    1/0\nexcept Exception as e:\n    f = e.__traceback__.tb_frame",
                 "import gc\nobjs = gc.get_objects()"]:
        assert run(code).passed == 0
    # Ordinary stdlib use that reads frames internally still works.
    ok = ("import collections, dataclasses, enum, typing, json, re, math, itertools, functools\n"
          "P = collections.namedtuple('P', 'a')\nT = typing.TypeVar('T')\nclass E(enum.Enum):\n    A = 1\n")
    assert run(ok, ["assert P(1).a == 1 and E.A.value == 1"]).passed == 1


def test_cpu_limit():
    r = run("while True:\n    pass", timeout_s=20, cpu_s=1)
    assert r.passed == 0 and r.status == "crashed" and "CPU" in r.detail and r.wall_s < 10


def test_memory_limit():
    r = run("x = bytearray(2 * 1024 ** 3)", memory_mb=256)
    assert r.passed == 0 and r.wall_s < 5


def test_wall_clock_limit():
    r = run("import time\ntime.sleep(60)", timeout_s=1.5)
    assert r.passed == 0 and r.status == "timeout" and r.wall_s < 5


def test_partial_credit_survives_a_later_hang():
    r = run("def f(x):\n    return x", ["assert f(1) == 1", "while True: pass"], timeout_s=2, cpu_s=1)
    assert r.passed == 1 and r.total == 2


def test_stdin_stdout_tests():
    r = run("n = int(input())\nprint(n * 2)", [{"input": "21", "output": "42"}, {"input": "1", "output": "3"}])
    assert (r.passed, r.total) == (1, 2)


def test_code_reward_reads_fenced_code():
    fn = resolve_reward("code").fn
    completion = "Here you go:\n```python\ndef sq(x):\n    return x * x\n```"
    assert fn(completion, {"tests": ["assert sq(3) == 9", "assert sq(2) == 4"]}) == 1.0
    assert fn(completion, {"tests": ["assert sq(3) == 9", "assert sq(2) == 5"]}, all_or_nothing=True) == 0.0
    with pytest.raises(KeyError):
        fn(completion, {})
