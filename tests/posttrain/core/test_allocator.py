"""posttrain/core/allocator.py: with a fixed mmap threshold a freed large tensor leaves the resident set."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import psutil, torch
from posttrain.core.allocator import mmap_large_allocations
assert mmap_large_allocations() {want}
rss = lambda: psutil.Process().memory_info().rss
keep = []
for i in range(64):  # 64 x 8 MiB tensors, every other one kept: a heap would keep the freed holes
    t = torch.ones(2**21)
    if i % 2:
        keep.append(t)
    else:
        del t
big = [torch.ones(2**21) for _ in range(8)]  # 8 x 8 MiB, then freed
before = rss()
del big
print((before - rss()) / 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_large_tensors_return_to_the_os():
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(want="is True")], capture_output=True, text=True,
                         check=True)
    assert float(out.stdout.strip()) > 60  # the 64 MiB left the process at once
