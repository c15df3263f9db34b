"""Run model-written Python against tests in a sandboxed subprocess.

Layers (each holds on its own; see sandbox_harness.py for the in-process ones):
- a fresh `python -I -S -B` in an empty temp dir, minimal environment (nothing of the
  parent's), its own session, killed with its whole tree at the wall-clock limit;
- rlimits: CPU seconds, address space, file size, open files, processes;
- an audit hook: no sockets, subprocesses, fork/exec, signals, ctypes, frame
  introspection, or files outside the temp dir;
- when the kernel allows it, `unshare --net` gives it a network namespace with no
  interface at all.

Not a container: use a VM/gVisor-class sandbox for adversarial code at scale. Known
limit: a solution can still game weak tests (an object whose `__eq__` is always True).

>>> r = run_tests("def add(a, b):\\n    return a + b", ["assert add(1, 2) == 3", "assert add(1, 1) == 3"])
>>> (r.passed, r.total)
(1, 2)
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from rewards.service import kill_tree

HARNESS = Path(__file__).with_name("sandbox_harness.py")


@dataclass
class SandboxResult:
    passed: int
    total: int
    status: str  # "ok" | "timeout" | "crashed" | "no_tests"
    wall_s: float
    detail: str = ""

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0


@lru_cache(maxsize=1)
def namespace_prefix() -> tuple[str, ...]:
    """The `unshare` prefix that works on this kernel (net + PID namespaces), or ()."""
    if os.environ.get("POSTTRAIN_SANDBOX_NO_UNSHARE") or not shutil.which("unshare"):
        return ()
    # No PID namespace: its PID 1 ignores SIGXCPU, which would void the CPU limit.
    candidates = [("unshare", "--net", "--"), ("unshare", "--map-root-user", "--net", "--")]
    for prefix in candidates:
        try:
            r = subprocess.run([*prefix, sys.executable, "-I", "-S", "-c", "pass"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0:
            return prefix
    return ()


def _readable_dirs() -> list[str]:
    paths = sysconfig.get_paths()
    dirs = {os.path.realpath(paths["stdlib"]), os.path.realpath(paths["platstdlib"])}
    return sorted(dirs)


def run_tests(code: str, tests: list, timeout_s: float = 10.0, cpu_s: float | None = None,
              memory_mb: int = 512) -> SandboxResult:
    """Run `code`, then each test (assert-style strings, or {"input", "output"} dicts for
    stdin/stdout programs); a test passes only if the harness reports it with the nonce."""
    if not isinstance(tests, list):
        tests = [tests]
    if not tests:
        return SandboxResult(0, 0, "no_tests", 0.0, "no tests")
    if not all(isinstance(t, str) for t in tests) and not all(isinstance(t, dict) for t in tests):
        raise ValueError("tests must be all strings (assert code) or all {'input', 'output'} dicts")
    nonce = secrets.token_hex(16)
    job = {"nonce": nonce, "code": code, "tests": tests, "cpu_s": max(1, int(cpu_s or timeout_s)),
           "memory_mb": memory_mb, "readable": _readable_dirs()}
    root = Path(tempfile.mkdtemp(prefix="posttrain-sandbox-"))
    work = root / "work"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": str(work), "TMPDIR": str(work),
           "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1"}
    t0 = time.monotonic()
    status, detail = "ok", ""
    try:
        with open(root / "result", "w+b") as out:
            proc = subprocess.Popen(
                [*namespace_prefix(), sys.executable, "-I", "-S", "-B", str(HARNESS)],
                stdin=subprocess.PIPE, stdout=out, stderr=subprocess.DEVNULL, cwd=work, env=env,
                start_new_session=True, close_fds=True,
            )
            try:
                proc.communicate(json.dumps(job).encode(), timeout=timeout_s)
            except subprocess.TimeoutExpired:
                status, detail = "timeout", f"wall-clock limit {timeout_s:g}s"
            except BrokenPipeError:
                pass
            finally:
                kill_tree(proc.pid)
                proc.wait(timeout=5)
            if status == "ok" and proc.returncode != 0:
                why = {-24: " (CPU-time limit)", -25: " (file-size limit)", -9: " (killed)"}
                status, detail = "crashed", f"exit code {proc.returncode}{why.get(proc.returncode, '')}"
            out.seek(0)
            data = out.read(16 * 1024 * 1024)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    passed_ids = set()
    for line in data.decode(errors="replace").splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == nonce and parts[2] == "1" and parts[1].isdigit():
            passed_ids.add(int(parts[1]))
    passed = len(passed_ids & set(range(len(tests))))
    return SandboxResult(passed, len(tests), status, time.monotonic() - t0, detail)


def extract_code(completion: str, language: str = "python") -> str:
    """The last fenced ```python block of a completion (or the whole text if none).

    >>> extract_code("Here:\\n```python\\nprint(1)\\n```\\nDone.")
    'print(1)\\n'
    """
    blocks = re.findall(r"```[ \t]*(\w*)[ \t]*\n(.*?)```", completion, re.DOTALL)
    blocks = [b for lang, b in blocks if lang.lower() in ("", language, "py", "python3")]
    return blocks[-1] if blocks else completion
