"""A pool of reward worker processes with per-call timeouts that kill the process.

Why processes, not threads: a hung or busy-looping call (a regex, sympy, a plugin's
`while True`) cannot be stopped in a thread, and `math_verify`'s `signal.alarm`
silently does nothing off the main thread. Here every call has a deadline; a worker
past it is killed with everything it started, the call is retried a bounded number of
times on a fresh worker, and then recorded as a failure. A worker that dies (os._exit,
out of memory, segfault) fails the call it was running the same way. Nothing waits
without a timeout, and `close()` leaves no child process behind.

A starting worker (a fresh interpreter importing the plugins) gets `start_timeout_s` of its
own CPU time, not of the wall clock: on a machine whose cores other jobs hold, a worker can
wait minutes for the CPU it needs to import, and a wall-clock deadline then killed it three
times and failed every sample of the batch (a load-dependent reward: the cause of the
"flaky" bf16 rerun test, docs/precision.md). A hung import is still bounded: one that spins
uses CPU and hits the limit; one blocked on I/O hits the wall-clock backstop,
START_WALL_FACTOR times `start_timeout_s`.

Per-sample plugins are sent in chunks (batching keeps IPC cheap) but report each
sample as it finishes, so the deadline is per call: `timeout_s` after the previous
sample's result. A batched plugin's whole call gets `timeout_s`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import weakref
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import ForkingPickler
from typing import Any

import psutil

from rewards.api import RewardFn, RewardResult

START_WALL_FACTOR = 10  # wall-clock bound of a worker start, in units of start_timeout_s (of CPU time)


def kill_tree(pid: int, timeout_s: float = 5.0) -> None:
    """SIGKILL a process, its process group and all its descendants; reap what we can."""
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    try:
        os.killpg(pid, signal.SIGKILL)  # workers lead their own session
    except (ProcessLookupError, PermissionError):
        pass
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    # Orphaned grandchildren become zombies of an init that may never reap them: a
    # zombie is dead enough.
    deadline = time.monotonic() + timeout_s
    for p in procs:
        while time.monotonic() < deadline:
            try:
                if p.status() == psutil.STATUS_ZOMBIE:
                    break
                p.wait(timeout=0.05)
                break
            except psutil.TimeoutExpired:
                continue
            except (psutil.NoSuchProcess, ChildProcessError):
                break


@dataclass
class Task:
    """Samples `items` (indices into its unit) of one reward, sent as one message."""

    unit: "Unit"
    items: list[int]
    attempt: int = 1
    done: set[int] = field(default_factory=set)


@dataclass
class Unit:
    """One reward over a batch; `results[i]` is filled as samples finish."""

    rf: RewardFn
    kwargs: dict[str, Any]
    completions: list[str]
    samples: list[dict]
    results: list[RewardResult | None] = field(default_factory=list)
    timeouts: int = 0
    retried: int = 0

    def __post_init__(self):
        self.results = [None] * len(self.completions)


class _Worker:
    def __init__(self, pool: "WorkerPool"):
        r_in, w_in = os.pipe()  # parent -> worker
        r_out, w_out = os.pipe()  # worker -> parent
        env = dict(os.environ)
        # The worker must import this checkout even when started from another cwd.
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("OMP_NUM_THREADS", "1")
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rewards.worker", str(r_in), str(w_out), str(pool.memory_mb), str(os.getpid())],
                pass_fds=(r_in, w_out), stdin=subprocess.DEVNULL, stdout=sys.__stderr__.fileno()
                if sys.__stderr__ else None, env=env, start_new_session=True, close_fds=True,
            )
        finally:
            os.close(r_in)
            os.close(w_out)
        self.send_conn = Connection(w_in, readable=False)
        self.recv_conn = Connection(r_out, writable=False)
        self.ready = False
        self.load_errors: dict[str, str] = {}
        self.task: Task | None = None
        self.task_id = -1
        self.started = time.monotonic()
        self.deadline = self.started + pool.start_timeout_s
        self.send_conn.send(("init", pool.refs))

    def cpu_seconds(self) -> float | None:
        """CPU time the worker process has used (None when it is gone or unreadable)."""
        try:
            t = psutil.Process(self.proc.pid).cpu_times()
        except (psutil.Error, OSError):
            return None
        return t.user + t.system

    def start_overdue(self, start_timeout_s: float, now: float) -> bool:
        """Whether a worker that is not ready yet has had its chance to start: `start_timeout_s` of
        its own CPU time, or START_WALL_FACTOR times that of wall time (module docstring)."""
        if now - self.started > START_WALL_FACTOR * start_timeout_s:
            return True
        if now <= self.deadline:
            return False
        cpu = self.cpu_seconds()
        if cpu is None or cpu >= start_timeout_s:
            return True
        self.deadline = now + max(0.5, start_timeout_s - cpu)  # look again when it could have used the rest
        return False

    def kill(self) -> None:
        kill_tree(self.proc.pid)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL does not fail
            pass
        for c in (self.send_conn, self.recv_conn):
            try:
                c.close()
            except OSError:
                pass

    def exit_reason(self) -> str:
        try:
            rc = self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            rc = None
        if rc is not None and rc < 0:
            try:
                sig = signal.Signals(-rc).name
            except ValueError:
                sig = str(-rc)
            extra = " (likely killed for memory)" if sig == "SIGKILL" else ""
            return f"worker process died from {sig}{extra}"
        return f"worker process exited with code {rc} (plugin called os._exit or crashed)"


class WorkerPool:
    """Runs reward units on `workers` processes; see the module docstring."""

    def __init__(self, refs: list, workers: int = 2, timeout_s: float = 30.0, retries: int = 1,
                 chunk_size: int | None = None, memory_mb: int = 4096, start_timeout_s: float = 60.0):
        if workers < 1:
            raise ValueError(f"workers={workers}: the reward pool needs at least 1 worker")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s={timeout_s}: reward calls need a positive timeout")
        if retries < 0:
            raise ValueError(f"retries={retries} must be >= 0")
        self.refs = list(refs)
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self.retries = retries
        self.chunk_size = chunk_size
        self.memory_mb = memory_mb
        self.start_timeout_s = start_timeout_s
        self._live: list[_Worker] = []
        self._next_id = 0
        self._finalizer = weakref.finalize(self, WorkerPool._kill_all, self._live)

    @staticmethod
    def _kill_all(live: list[_Worker]) -> None:
        while live:
            live.pop().kill()

    def close(self) -> None:
        self._kill_all(self._live)

    def start(self) -> int:
        """Start all workers now (they import their rewards); returns how many are ready."""
        while len(self._live) < self.workers:
            self._live.append(_Worker(self))
        def waiting() -> list[_Worker]:
            now = time.monotonic()
            return [w for w in self._live if not w.ready and not w.start_overdue(self.start_timeout_s, now)]

        while waiting():
            readable = wait([w.recv_conn for w in self._live if not w.ready], timeout=0.5)
            for w in list(self._live):
                if w.recv_conn in readable:
                    self._drain(w, deque())
        return sum(w.ready for w in self._live)

    # ------------------------------------------------------------------ scheduling

    def _chunks(self, unit: Unit) -> list[Task]:
        n = len(unit.completions)
        if n == 0:
            return []
        size = self.chunk_size or max(1, min(64, -(-n // (self.workers * 4))))
        if unit.rf.batched and not self.chunk_size:
            size = -(-n // self.workers)
        return [Task(unit, list(range(i, min(n, i + size)))) for i in range(0, n, size)]

    def run(self, units: list[Unit]) -> None:
        """Fill every unit's results; returns when each sample has a value or a failure."""
        queue: deque[Task] = deque(t for u in units for t in self._chunks(u))
        self._start_failures = 0
        while queue or any(w.task for w in self._live):
            while queue and len(self._live) < self.workers and self._start_failures < 3:
                self._live.append(_Worker(self))
            if self._start_failures >= 3 and not any(w.task or not w.ready for w in self._live):
                reason = getattr(self, "_start_error", "reward worker failed to start")
                while queue:
                    self._finish(queue.popleft(), reason)
                break
            for w in list(self._live):
                if w.ready and w.task is None and queue:
                    self._dispatch(w, queue.popleft(), queue)
            now = time.monotonic()
            timeout = max(0.0, min([w.deadline for w in self._live] + [now + 1.0]) - now)
            readable = wait([w.recv_conn for w in self._live], timeout=timeout)
            for w in list(self._live):
                if w.recv_conn in readable:
                    self._drain(w, queue)
            now = time.monotonic()
            for w in list(self._live):
                if w in self._live and now > w.deadline:
                    if not w.ready:
                        if not w.start_overdue(self.start_timeout_s, now):
                            continue
                        self._start_error = (f"reward worker did not start within {self.start_timeout_s:g}s of "
                                             f"CPU time ({START_WALL_FACTOR * self.start_timeout_s:g}s wall-clock)")
                        self._start_failures += 1
                        self._drop(w, queue, culprit_reason=None)
                    elif w.task is not None:
                        w.task.unit.timeouts += 1
                        self._drop(w, queue, f"timeout: no result within {self.timeout_s:g}s "
                                             "(worker process killed)")
                    else:
                        w.deadline = now + 3600.0

    def _dispatch(self, w: _Worker, task: Task, queue: deque) -> None:
        self._next_id += 1
        u = task.unit
        todo = [i for i in task.items if u.results[i] is None]
        task.items = todo
        if not todo:
            return
        w.task, w.task_id = task, self._next_id
        grace = 5.0 if u.rf.is_async else 0.0
        w.deadline = time.monotonic() + self.timeout_s + grace
        msg = ("run", w.task_id, u.rf.name, u.kwargs, [u.completions[i] for i in todo],
               [u.samples[i] for i in todo], self.timeout_s)
        try:
            data = ForkingPickler.dumps(msg)
        except Exception as e:  # a sample that cannot cross a process boundary
            w.task = None
            w.deadline = time.monotonic() + 3600.0
            self._finish(task, f"cannot send the samples to a worker: {type(e).__name__}: {e}"[:300])
            return
        try:
            w.send_conn.send_bytes(data)
        except (BrokenPipeError, OSError):  # died while idle: not this task's fault
            w.task = None
            queue.appendleft(task)
            self._live.remove(w)
            w.kill()

    def _drain(self, w: _Worker, queue: deque) -> None:
        """Read every pending message of a worker."""
        while True:
            try:
                if not w.recv_conn.poll():
                    return
                msg = w.recv_conn.recv()
            except (EOFError, OSError):
                reason = w.exit_reason()
                if not w.ready:
                    self._start_error = f"reward worker failed to start: {reason}"
                    self._start_failures += 1
                self._drop(w, queue, reason if w.ready else None)
                return
            kind = msg[0]
            if kind == "ready":
                w.ready, w.load_errors = True, msg[1]
                self._start_failures = 0
                w.deadline = time.monotonic() + 3600.0
            elif w.task is None or msg[1] != w.task_id:
                continue  # a late message of a task already given up on
            elif kind == "item":
                _, _, i, value, error = msg
                idx = w.task.items[i]
                w.task.unit.results[idx] = RewardResult(value, error)
                w.task.done.add(idx)
                w.deadline = time.monotonic() + self.timeout_s
            elif kind == "batch":
                for idx, (value, error) in zip(w.task.items, msg[2]):
                    w.task.unit.results[idx] = RewardResult(value, error)
                    w.task.done.add(idx)
            elif kind == "done":
                w.task = None
                w.deadline = time.monotonic() + 3600.0

    def _drop(self, w: _Worker, queue: deque, culprit_reason: str | None) -> None:
        """Kill a worker; its running call failed with `culprit_reason`, the rest go back."""
        if w in self._live:
            self._live.remove(w)
        w.kill()
        task, w.task = w.task, None
        if task is None:
            return
        u = task.unit
        left = [i for i in task.items if u.results[i] is None]
        if not left:
            return
        # Per-sample plugins run in order: only the first unfinished sample was running.
        running = left if (u.rf.batched or u.rf.is_async) else left[:1]
        rest = [i for i in left if i not in running]
        if rest:
            queue.appendleft(Task(u, rest, task.attempt))
        if culprit_reason is None:
            queue.appendleft(Task(u, running, task.attempt))
        elif task.attempt <= self.retries:
            u.retried += len(running)
            queue.append(Task(u, running, task.attempt + 1))
        else:
            tries = f" after {task.attempt} attempts" if task.attempt > 1 else ""
            for i in running:
                u.results[i] = RewardResult.fail(culprit_reason + tries)

    def _finish(self, task: Task, reason: str) -> None:
        for i in task.items:
            if task.unit.results[i] is None:
                task.unit.results[i] = RewardResult.fail(reason)
