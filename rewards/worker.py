"""The child side of the reward worker pool: `python -m rewards.worker FD_IN FD_OUT MEM_MB`.

A fresh interpreter (not a fork of a threaded trainer), in its own session so the
parent can kill it and everything it started. It reads tasks from FD_IN and writes
one message per scored sample to FD_OUT, so the parent knows which call is running
and can time out exactly that one.

Messages, parent -> worker: ("init", [RewardRef, ...]) then ("run", task_id, name,
kwargs, completions, samples, timeout_s). Worker -> parent: ("ready", {name: error}),
("item", task_id, i, value, error), ("batch", task_id, [(value, error), ...]),
("done", task_id).
"""

from __future__ import annotations

import asyncio
import os
import resource
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


def _exit_with_parent() -> None:
    """If the parent dies (even by SIGKILL), a worker stuck in a plugin must not live on."""
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
