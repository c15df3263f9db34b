"""A plugin whose import in a reward worker takes 6 s of wall-clock time but almost no CPU: what any
worker's start looks like on a machine whose cores other jobs hold (it waits for the CPU to import).
The parent's own import of it (to resolve the reward) is instant."""
import os
import sys
import time

if sys.argv[0].endswith(os.path.join("rewards", "worker.py")):
    time.sleep(6)


def ok(completion, sample):
    return 1.0
