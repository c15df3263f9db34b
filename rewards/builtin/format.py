"""`format` (tags, JSON, Markdown, code fences) and `length` (overlong penalty).

`format` kinds (kwarg `kind`, or the row's `format` field when it has one):
- `think`: one `<think>...</think>` block with content, first, then a non-empty answer;
- `no_think`: no reasoning (an empty `<think></think>` is allowed), a non-empty answer;
- `auto_think`: either of the two, well formed;
- `json`: the completion (optionally in a ```json fence) parses as JSON, with `required_keys`;
- `markdown`: at least `min_headings` headings, `min_bullets` list items, `min_tables` tables;
- `code`: a fenced code block (in `language` if given); Python blocks must parse.
With `answer_tag=True` the answer must be wrapped in `<answer>...</answer>`.

>>> format_reward("<think>add them</think>The sum is 5.", {}, kind="think")
1.0
>>> format_reward("The sum is 5.", {}, kind="think")
0.0
>>> format_reward("<think>\\n\\n</think>5", {}, kind="no_think")
1.0
>>> format_reward('```json\\n{"a": 1}\\n```', {}, kind="json", required_keys=["a"])
1.0
>>> length_penalty("x" * 90, {}, max_length=100, buffer=20)
-0.5
"""

from __future__ import annotations

import ast
import json
import re

from rewards.api import reward

KINDS = ("think", "no_think", "auto_think", "json", "markdown", "code")
_THINK_RE = re.compile(r"^\s*<think>(.*?)</think>(.*)$", re.DOTALL)
_ANSWER_RE = re.compile(r"^\s*<answer>(.*?)</answer>\s*$", re.DOTALL)
_FENCE_RE = re.compile(r"^```[ \t]*([\w+#.-]*)[ \t]*\n(.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


def _answer_ok(answer: str, answer_tag: bool) -> bool:
    if "<think>" in answer or "</think>" in answer:
        return False
    if answer_tag:
        m = _ANSWER_RE.match(answer)
        return bool(m and m.group(1).strip())
    return bool(answer.strip())


def check_think(text: str, answer_tag: bool = False) -> bool:
    """One leading, non-empty think block, then an answer.

    >>> check_think("<think>a</think><think>b</think>c")
    False
    """
    m = _THINK_RE.match(text)
    if not m or not m.group(1).strip() or "<think>" in m.group(1):
        return False
    return _answer_ok(m.group(2), answer_tag)


def check_no_think(text: str, answer_tag: bool = False) -> bool:
    m = _THINK_RE.match(text)
    if m:
        if m.group(1).strip():
            return False
        text = m.group(2)
    return _answer_ok(text, answer_tag)


def check_json(text: str, required_keys: list[str] | None = None) -> bool:
    """Valid JSON, bare or in one ```json fence; an object with `required_keys` if given."""
    s = text.strip()
    m = re.fullmatch(r"```[ \t]*(?:json|JSON)?[ \t]*\n(.*?)\n?```", s, re.DOTALL)
    if m:
        s = m.group(1)
    try:
        obj = json.loads(s)
    except (ValueError, RecursionError):
        return False
    if required_keys:
        return isinstance(obj, dict) and all(k in obj for k in required_keys)
    return True


def check_markdown(text: str, min_headings: int = 1, min_bullets: int = 0, min_tables: int = 0) -> bool:
    """Markdown structure outside code fences: headings, list items, tables."""
    body = _FENCE_RE.sub("", text)
    headings = len(re.findall(r"^#{1,6}\s+\S", body, re.MULTILINE))
    bullets = len(re.findall(r"^\s*(?:[-*+]|\d+[.)])\s+\S", body, re.MULTILINE))
    tables = len(re.findall(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)+\|?\s*$", body, re.MULTILINE))
    return headings >= min_headings and bullets >= min_bullets and tables >= min_tables


def check_code(text: str, language: str | None = None) -> bool:
    """A fenced code block (in `language`); Python blocks must parse.

    >>> check_code("```python\\ndef f(:\\n```", "python")
    False
    """
    for lang, code in _FENCE_RE.findall(text):
        if language and lang.lower() != language.lower():
            continue
        if not code.strip():
            continue
        if lang.lower() in ("python", "py", "python3"):
            try:
                ast.parse(code)
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                continue
        return True
    return False


@reward("format")
def format_reward(completion: str, sample: dict, kind: str = "think", answer_tag: bool = False,
                  required_keys: list[str] | None = None, min_headings: int = 1, min_bullets: int = 0,
                  min_tables: int = 0, language: str | None = None) -> float:
    """1.0 when the completion has the required format (think/no_think/auto_think/json/markdown/code)."""
    kind = sample.get("format", kind) if isinstance(sample.get("format"), str) else kind
    if kind == "think":
        ok = check_think(completion, answer_tag)
    elif kind == "no_think":
        ok = check_no_think(completion, answer_tag)
    elif kind == "auto_think":
        ok = check_think(completion, answer_tag) or check_no_think(completion, answer_tag)
    elif kind == "json":
        ok = check_json(completion, required_keys)
    elif kind == "markdown":
        ok = check_markdown(completion, min_headings, min_bullets, min_tables)
    elif kind == "code":
        ok = check_code(completion, language)
    else:
        raise ValueError(f"unknown format kind {kind!r}; use one of {', '.join(KINDS)}")
    return float(ok)


@reward("length")
def length_penalty(completion: str, sample: dict, max_length: int = 1024, buffer: int = 256,
                   unit: str = "chars") -> float:
    """Overlong penalty (DAPO's soft form): 0 up to max_length - buffer, then linear to -1
    at max_length, -1 beyond. `unit`: chars, words, or tokens (from sample['num_tokens'])."""
    if unit == "chars":
        n = len(completion)
    elif unit == "words":
        n = len(completion.split())
    elif unit == "tokens":
        if not isinstance(sample.get("num_tokens"), int):
            raise KeyError("unit='tokens' needs an integer 'num_tokens' field in the sample")
        n = sample["num_tokens"]
    else:
        raise ValueError(f"unknown unit {unit!r}; use chars, words or tokens")
    if not 0 <= buffer <= max_length:
        raise ValueError(f"buffer={buffer} must be within [0, max_length={max_length}]")
    free = max_length - buffer
    if n <= free:
        return 0.0
    if n >= max_length or buffer == 0:
        return -1.0
    return (free - n) / buffer
