"""`math`: 1.0 when the completion's final answer equals the row's `answer` (math-verify).

The answer is taken from the last `\\boxed{...}` (or `\\fbox`), else the last
"Answer: ..." / "the answer is ...", else the last number. Equivalence is math-verify's
sympy comparison: fractions, decimals, LaTeX, sets, intervals, expressions.

math-verify's own timeouts use `signal.alarm`, which silently does nothing off the
main thread (every score came back 0 in Ray workers elsewhere). They are switched
off here; the worker pool bounds every call by killing its process instead.
A reference answer that cannot be parsed is a failure (the row is broken), a
completion without a parsable answer scores 0.0.

>>> extract_answer("so x = 3, thus \\\\boxed{\\\\frac{1}{2}}.")
'\\\\frac{1}{2}'
>>> extract_answer("Step 1 gives 4.\\nAnswer: 12 apples")
'12 apples'
>>> extract_answer("we get 3 and then 7.5")
'7.5'
>>> math_reward("The result is \\\\boxed{0.5}", {"answer": "\\\\frac{1}{2}"})
1.0
>>> math_reward("The result is \\\\boxed{0.6}", {"answer": "1/2"})
0.0
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from rewards.api import reward

_ANSWER_RE = re.compile(r"(?:final answer|answer)(?:\s+is)?\s*[:：]?\s*(.+)", re.IGNORECASE)
_NUMBER_RE = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:\s*/\s*\d+)?")


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} / \\fbox{...}, braces balanced."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j].strip()
    return None


def extract_answer(text: str) -> str | None:
    """The final answer string of a completion, or None."""
    boxed = _boxed(text)
    if boxed:
        return boxed
    matches = _ANSWER_RE.findall(text)
    if matches:
        ans = matches[-1].strip().rstrip(".").strip().strip("$").strip()
        if ans:
            return ans
    nums = _NUMBER_RE.findall(text)
    return nums[-1].replace(",", "").replace(" ", "") if nums else None


def _configs():
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


@lru_cache(maxsize=1)
def _cfg():
    return _configs()


def _parse(text: str):
    from math_verify import parse

    wrapped = text if "$" in text or "\\(" in text or "\\[" in text else f"${text}$"
    out = parse(wrapped, extraction_config=_cfg(), parsing_timeout=None)
    if not out and wrapped != text:
        out = parse(text, extraction_config=_cfg(), parsing_timeout=None)
    return out


@lru_cache(maxsize=4096)
def _parse_gold(answer: str):
    return _parse(answer)


def _norm(s: str) -> str:
    return re.sub(r"\s+|\\[,;!]|\\left|\\right|\$", "", s).rstrip(".")


def answers_match(pred: str, gold: str, float_rounding: int = 6) -> bool:
    """math-verify equivalence of two answer strings (plus normalised string equality).

    >>> answers_match("\\\\{2, 1\\\\}", "\\\\{1,2\\\\}"), answers_match("(0,1]", "[0,1]")
    (True, False)
    """
    from math_verify import verify

    if _norm(pred) == _norm(gold):
        return True
    g = _parse_gold(gold)
    if not g or all(isinstance(x, str) for x in g):  # only the raw string came back
        raise ValueError(f"cannot parse the reference answer {gold!r}")
    p = _parse(pred)
    if not p or all(isinstance(x, str) for x in p):
        return False
    return bool(verify(g, p, float_rounding=float_rounding, timeout_seconds=None))


@reward("math")
def math_reward(completion: str, sample: dict, answer_key: str = "answer", float_rounding: int = 6) -> float:
    """1.0 if the final answer (boxed / 'Answer:' / last number) equals sample['answer']."""
    if answer_key not in sample:
        raise KeyError(f"sample has no {answer_key!r} field")
    pred = extract_answer(completion)
    if pred is None:
        return 0.0
    return float(answers_match(pred, str(sample[answer_key]), float_rounding))
