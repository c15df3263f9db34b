"""Step 1 of the LongCoT pipeline: collect prompts from task files, merge them, drop exact and
near duplicates, and optionally rewrite the questions with a model.

Exact duplicates: the same prompt after lower-casing and collapsing whitespace. Near
duplicates: Jaccard similarity of the character 3-gram sets of the prompts with spaces and
punctuation removed >= `near_threshold`, found with MinHash + LSH banding (candidates) and
checked exactly, so the cost stays near linear in the number of prompts. A short numeric
prompt changes many 3-grams when one digit changes ("What is 12 + 34?" vs "... 12 + 35?": Jaccard 0.78),
so different problems are not merged at the default 0.9; reformatted copies
("What is 12+34?" vs "what is 12 + 34 ?") are.

The first occurrence of a prompt is kept (files in the order given); every dropped row is
counted by reason.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any, Callable

from posttrain.core.data import DatasetError, load_rows, prompt_messages

_PUNCT = re.compile(r"[\W_]+", re.UNICODE)
N_PERM, BANDS = 32, 16  # 16 bands of 2 rows: a pair at Jaccard 0.9 is a candidate with p > 0.999


def prompt_text(row: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in prompt_messages(row))


def exact_key(text: str) -> str:
    """The prompt without case or extra whitespace.

    >>> exact_key("  What IS 1 +  2? ") == exact_key("what is 1 + 2?")
    True
    """
    return " ".join(text.lower().split())


def shingles(text: str, n: int = 3) -> set[str]:
    """Character n-grams of the text without case, spaces or punctuation.

    >>> sorted(shingles("A-b c!d"))
    ['abc', 'bcd']
    """
    s = _PUNCT.sub("", text.lower())
    return {s[i:i + n] for i in range(max(1, len(s) - n + 1))}


def jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / max(len(a | b), 1)


def _minhash(sh: set[str]) -> list[int]:
    return [min(int.from_bytes(hashlib.blake2b(f"{i}:{g}".encode(), digest_size=8).digest(), "big") for g in sh)
            for i in range(N_PERM)]


def dedup(rows: list[dict[str, Any]], near_threshold: float = 0.9) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(kept rows, {"exact_duplicates", "near_duplicates"}), first occurrence kept.

    >>> rows = [{"id": "a", "prompt": "What is 12+34?"}, {"id": "b", "prompt": "what is 12 + 34 ?"},
    ...         {"id": "c", "prompt": "What is 12 + 43?"}, {"id": "d", "prompt": "What is 12+34?"}]
    >>> kept, counts = dedup(rows)
    >>> [r["id"] for r in kept], counts
    (['a', 'c'], {'exact_duplicates': 1, 'near_duplicates': 1})
    """
    seen_exact: set[str] = set()
    buckets: dict[tuple[int, bytes], list[int]] = {}
    kept: list[dict[str, Any]] = []
    kept_sh: list[set[str]] = []
    counts = {"exact_duplicates": 0, "near_duplicates": 0}
    r = N_PERM // BANDS
    for row in rows:
        text = prompt_text(row)
        key = exact_key(text)
        if key in seen_exact:
            counts["exact_duplicates"] += 1
            continue
        seen_exact.add(key)
        sh = shingles(text)
        sig = _minhash(sh)
        bands = [(b, repr(sig[b * r:(b + 1) * r]).encode()) for b in range(BANDS)]
        cands = {j for band in bands for j in buckets.get(band, [])}
        if any(jaccard(sh, kept_sh[j]) >= near_threshold for j in cands):
            counts["near_duplicates"] += 1
            continue
        for band in bands:
            buckets.setdefault(band, []).append(len(kept))
        kept.append(row)
        kept_sh.append(sh)
    return kept, counts


def merge_sources(paths: list[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Rows of every file, in order; ids made unique across files (`<file stem>:<id>` on a clash)."""
    if not paths:
        raise DatasetError("data.sources is empty; give at least one task file (id, prompt, answer)")
    rows, ids, per_file = [], set(), {}
    for p in paths:
        file_rows = load_rows(p)
        per_file[str(p)] = len(file_rows)
        for r in file_rows:
            rid = r["id"] if r["id"] not in ids else f"{Path(p).stem}:{r['id']}"
            ids.add(rid)
            rows.append({**r, "id": rid, "source": str(p)})
    return rows, per_file


def rewrite_rows(rows: list[dict[str, Any]], rewrite: Callable[[list[str]], list[str]]) -> tuple[list[dict], int]:
    """Each row's prompt replaced by its rewrite (the original kept in `original_prompt`); an empty
    rewrite keeps the original. Returns (rows, number rewritten)."""
    new = rewrite([prompt_text(r) for r in rows])
    out, n = [], 0
    for r, text in zip(rows, new):
        text = text.strip()
        if text and text != prompt_text(r):
            out.append({**r, "prompt": text, "original_prompt": r["prompt"]})
            n += 1
        else:
            out.append(r)
    return out, n
