"""Append a hint after the question: string prompts and chat-message prompts.

The hint goes through a template (default "{question}\\n{hint}"). For chat prompts it
is appended to the last user message; other messages are left as they are.

>>> inject_hint("What is 2 + 2?", "Hint: add.")
'What is 2 + 2?\\nHint: add.'
>>> inject_hint([{"role": "user", "content": "Q"}], "H", "{question} ({hint})")
[{'role': 'user', 'content': 'Q (H)'}]
>>> inject_hint("Q", "")
'Q'
"""

from __future__ import annotations

import string
from typing import Any

from hints.levels import NO_HINT, check_level

DEFAULT_TEMPLATE = "{question}\n{hint}"
HINT_LEVEL_KEY = "hint_level"


class HintInjectionError(ValueError):
    """A prompt the hint cannot be attached to; the message names the row."""


def check_template(template: str, where: str = "hints.template") -> str:
    """The template must use exactly the fields {question} and {hint}."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise ValueError(f"{where}: {template!r} is not a valid format string ({e}); "
                         "write literal braces as {{ and }}") from None
    if fields != {"question", "hint"}:
        raise ValueError(f"{where}: template must contain exactly the fields {{question}} and {{hint}}, "
                         f"got {sorted(fields)} in {template!r}; e.g. '{{question}}\\n{{hint}}'")
    return template


def _last_user_index(messages: list[dict[str, Any]]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") == "user":
            return i
    return None


def question_text(prompt: str | list[dict[str, Any]], where: str = "prompt") -> str:
    """The question: the string prompt, or the last user message of a chat prompt."""
    if isinstance(prompt, str):
        return prompt
    i = _last_user_index(prompt)
    if i is None:
        raise HintInjectionError(f"{where}: chat prompt has no 'user' message to attach a hint to; "
                                 "add a user turn or disable hints for this row")
    return prompt[i]["content"]


def inject_hint(prompt: str | list[dict[str, Any]], hint: str, template: str = DEFAULT_TEMPLATE,
                where: str = "prompt") -> str | list[dict[str, Any]]:
    """A new prompt with `hint` appended after the question; an empty hint changes nothing."""
    if not hint:
        return prompt
    if isinstance(prompt, str):
        return template.format(question=prompt, hint=hint)
    i = _last_user_index(prompt)
    if i is None:
        question_text(prompt, where)  # raises with the message
    messages = [dict(m) for m in prompt]
    messages[i]["content"] = template.format(question=messages[i]["content"], hint=hint)
    return messages


def with_hint(row: dict[str, Any], level: int, hint: str, template: str = DEFAULT_TEMPLATE
              ) -> dict[str, Any]:
    """A copy of the dataset row whose prompt carries the hint, tagged with `hint_level`.

    Level 0 returns the row's own prompt (still tagged, so metrics see level 0).
    """
    level = check_level(level, f"row {row.get('id')!r}")
    out = dict(row)
    out[HINT_LEVEL_KEY] = level
    if level != NO_HINT:
        out["prompt"] = inject_hint(row["prompt"], hint, template, where=f"row {row.get('id')!r}")
    return out
