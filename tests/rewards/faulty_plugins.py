"""Misbehaving reward plugins for the fault-matrix tests (named as 'faulty_plugins.py:fn')."""

import asyncio
import os
import sys
import time


def ok(completion, sample):
    return 1.0


def raises(completion, sample):
    raise RuntimeError("plugin exploded")


def hangs(completion, sample):
    time.sleep(3600)


def busy_loop(completion, sample):
    while True:
        pass


def nan(completion, sample):
    return float("nan")


def inf(completion, sample):
    return float("-inf")


def string(completion, sample):
    return "0.5"


def none(completion, sample):
    return None


def wrong_count(completions, samples):
    return [1.0] * (len(completions) + 1)


wrong_count.batched = True


def sys_exit(completion, sample):
    sys.exit(3)


def os_exit(completion, sample):
    os._exit(7)


def allocates(completion, sample):
    blocks = []
    while True:
        blocks.append(bytearray(1024 * 1024 * 1024))


def spawns_child_and_hangs(completion, sample):
    import subprocess

    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    time.sleep(3600)


def hangs_on_marked(completion, sample):
    if completion == "hang":
        time.sleep(3600)
    return float(len(completion))


def fails_on_marked(completion, sample):
    if completion == "bad":
        raise ValueError("bad row")
    return 1.0


async def async_ok(completion, sample):
    await asyncio.sleep(0.01)
    return 0.5


async def async_hangs(completion, sample):
    await asyncio.sleep(3600)


def batched_len(completions, samples):
    return [float(len(c)) for c in completions]


batched_len.batched = True


def gil_bound_with_child(completion, sample):
    """Starts a subprocess, then holds the GIL for ever (catastrophic regex backtracking):
    a watchdog thread in the worker never runs again."""
    import re
    import subprocess

    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    return float(bool(re.match(r"(a+)+$", "a" * 64 + "b")))
