"""A plugin whose import in a reward worker never ends and burns CPU meanwhile: a hung start, which
must still fail. The parent's own import of it (to resolve the reward) is instant."""
import os
import sys

if sys.argv[0].endswith(os.path.join("rewards", "worker.py")):
    while True:
        pass


def ok(completion, sample):
    return 1.0
