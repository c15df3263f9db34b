"""Three small rewards showing the plugin shapes posttrain accepts.

>>> polite("Could you please wait?", {})
1.0
>>> keyword_density(["cat cat dog", "dog"], [{"keyword": "cat"}, {"keyword": "cat"}])
[0.6666666666666666, 0.0]
"""

from __future__ import annotations

import asyncio


def polite(completion: str, sample: dict, words: tuple[str, ...] = ("please", "thank")) -> float:
    """Per sample: 1.0 if the completion contains a polite word."""
    text = completion.lower()
    return float(any(w in text for w in words))


def keyword_density(completions: list[str], samples: list[dict]) -> list[float]:
    """Per batch: share of words equal to the row's `keyword` (a missing keyword raises,
    which posttrain records as a failure of the whole call, naming this reward)."""
    out = []
    for c, s in zip(completions, samples):
        words = c.lower().split()
        out.append(sum(w == s["keyword"] for w in words) / len(words) if words else 0.0)
    return out


keyword_density.batched = True  # how a plain function says "lists in, list out"


async def slow_echo(completion: str, sample: dict, delay_s: float = 0.01) -> float:
    """Async: stands in for a call to an HTTP service; posttrain bounds it by its timeout."""
    await asyncio.sleep(delay_s)
    return float(len(completion) > 0)
