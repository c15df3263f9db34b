"""Deterministic per-unit seeds: a unit (step, prompt_id, sample_idx) samples the same
tokens whichever actor runs it, and however often it is retried.

>>> unit_seed(0, (3, "add-1", 2)) == unit_seed(0, (3, "add-1", 2))
True
>>> unit_seed(0, (3, "add-1", 2)) != unit_seed(0, (3, "add-1", 3))
True
"""

from __future__ import annotations

import hashlib


def unit_seed(base_seed: int, key: tuple) -> int:
    digest = hashlib.blake2b(repr((base_seed, *key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFF
