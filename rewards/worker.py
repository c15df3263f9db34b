"""The child side of the reward worker pool: `python -m rewards.worker FD_IN FD_OUT MEM_MB [PARENT_PID]`.

A fresh interpreter (not a fork of a threaded trainer), in its own session so the
parent can kill it and everything it started. It dies with its parent whatever the
plugin does: on Linux the kernel SIGKILLs it when the parent dies (PR_SET_PDEATHSIG; a
watchdog thread never runs while a plugin holds the GIL, e.g. in catastrophic regex
backtracking), and a forked sentinel then SIGKILLs the worker's process group, so the
plugin's own subprocesses die too. (The kernel ties the signal to the parent *thread*
that started the worker: start pools from long-lived threads.) It reads tasks from FD_IN and writes
one message per scored sample to FD_OUT, so the parent knows which call is running
and can time out exactly that one.

Messages, parent -> worker: ("init", [RewardRef, ...]) then ("run", task_id, name,
kwargs, completions, samples, timeout_s). Worker -> parent: ("ready", {name: error}),
("item", task_id, i, value, error), ("batch", task_id, [(value, error), ...]),
("done", task_id).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import resource
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection

from rewards.api import RewardResult, call_one, call_reward, check_value, describe_exception
from rewards.resolve import resolve_ref


def _limit_memory(mb: int) -> None:
    if mb <= 0:
        return

    limit = mb * 1024 * 1024
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError):  # pragma: no cover - platform without RLIMIT_AS
        pass


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _on_parent_death(sig: int) -> bool:
    """Ask the kernel to send `sig` when our parent dies; False where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover - no libc prctl
        return False


def _sentinel(worker: int) -> None:
    """A forked child of the worker that holds no lock and no pipe: when the worker dies
    (killed with its parent, timed out, or exiting), it kills the worker's process group,
    the plugin's subprocesses included, then itself."""
    os.closerange(3, 1 << 16)  # never keep the worker's pipes open
    group = os.getpgid(0)

    def kill_group(*_: object) -> None:
        os.killpg(group, signal.SIGKILL)
        os._exit(0)

    signal.signal(signal.SIGTERM, kill_group)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _on_parent_death(signal.SIGTERM)
    if os.getppid() != worker:  # the worker died before the request took effect
        kill_group()
    while True:
        signal.pause()


def _die_with_parent(parent: int) -> None:
    """Kernel-enforced death with the parent (Linux), and the sentinel for our group."""
    if _on_parent_death(signal.SIGKILL):
        worker = os.getpid()
        if os.fork() == 0:
            _sentinel(worker)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _exit_with_parent() -> None:
    """Fallback without prctl: a watchdog thread (runs only while a plugin lets go of the GIL)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _run_async_items(rf, task_id, completions, samples, kwargs, timeout_s, send) -> None:
    """Async per-sample plugins run concurrently, each bounded by wait_for."""
    async def one(i):
        try:
            out = await asyncio.wait_for(rf.fn(completions[i], samples[i], **kwargs), timeout_s)
            r = check_value(out)
        except asyncio.TimeoutError:
            r = RewardResult.fail(f"timeout: async call took over {timeout_s:g}s")
        except BaseException as e:
            r = RewardResult.fail(describe_exception(e))
        send(("item", task_id, i, r.value, r.error))

    async def main():
        await asyncio.gather(*(one(i) for i in range(len(completions))))

    asyncio.run(main())


def serve(conn_in, conn_out) -> None:
    def send(msg) -> None:
        conn_out.send(msg)

    fns = {}
    kind, refs = conn_in.recv()
    assert kind == "init", kind
    errors = {}
    for ref in refs:
        try:
            fns[ref.name] = resolve_ref(ref)
        except BaseException as e:
            errors[ref.name] = describe_exception(e)
    send(("ready", errors))
    while True:
        try:
            msg = conn_in.recv()
        except EOFError:
            return
        _, task_id, name, kwargs, completions, samples, timeout_s = msg
        rf = fns.get(name)
        if rf is None:
            reason = f"cannot load reward in worker: {errors.get(name, 'not initialised')}"
            send(("batch", task_id, [(None, reason)] * len(completions)))
        elif rf.batched:
            results = call_reward(rf, completions, samples, kwargs)
            send(("batch", task_id, [(r.value, r.error) for r in results]))
        elif rf.is_async:
            _run_async_items(rf, task_id, completions, samples, kwargs, timeout_s, send)
        else:
            for i, (c, s) in enumerate(zip(completions, samples)):
                try:
                    r = call_one(rf, c, s, kwargs)
                except BaseException as e:  # pragma: no cover - call_one catches all
                    send(("item", task_id, i, None, describe_exception(e)))
                    continue
                send(("item", task_id, i, r.value, r.error))
        send(("done", task_id))


def main() -> None:
    fd_in, fd_out, mem_mb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    _die_with_parent(int(sys.argv[4]) if len(sys.argv) > 4 else os.getppid())
    _limit_memory(mem_mb)
    _exit_with_parent()
    conn_in = Connection(fd_in, writable=False)
    conn_out = Connection(fd_out, readable=False)
    try:
        serve(conn_in, conn_out)
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass
    finally:
        # Skip interpreter teardown: a plugin's threads or atexit hooks must not keep us alive.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


if __name__ == "__main__":
    main()
