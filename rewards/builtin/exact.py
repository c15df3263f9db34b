"""`exact`: 1.0 when the stripped completion equals the row's `answer`.

>>> exact_match("  42\\n", {"answer": "42"})
1.0
>>> exact_match("41", {"answer": "42"})
0.0
"""

from __future__ import annotations

from rewards.api import reward


@reward("exact")
def exact_match(completion: str, sample: dict) -> float:
    if "answer" not in sample:
        raise KeyError("sample has no 'answer' field")
    return float(completion.strip() == str(sample["answer"]).strip())
