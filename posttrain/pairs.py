"""Preference pairs: built from scored rollouts, read and checked for training.

Scored rollouts (`posttrain data pairs --input`) are JSONL rows
`{"prompt_id" (or "id"), "prompt", "completion", "reward"}`, G rows per prompt. A pair
takes a top-reward sample as `chosen` and a bottom-reward one as `rejected`; prompts
whose samples all tie (or have fewer than two scored samples) give no pair.
Rows with `reward: null` (a failed reward) are left out, never read as 0.

Pair rows are `{"id", "prompt", "chosen", "rejected"}` with `prompt` a string or a
message list and the sides strings or assistant-message lists (TRL's formats).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from posttrain.data import DatasetError, prompt_messages, read_jsonl

PASS_THROUGH = ("answer", "task")


def _err(path: Path | str, line: int, msg: str) -> DatasetError:
    return DatasetError(f"{path}:{line}: {msg}")


def _scored_row(obj: Any, path: Path, line: int) -> tuple[str, float | None, dict[str, Any]]:
    if not isinstance(obj, dict):
        raise _err(path, line, f"row must be a JSON object, got {type(obj).__name__}")
    pid = obj.get("prompt_id", obj.get("id"))
    if not isinstance(pid, str) or not pid:
        raise _err(path, line, "field 'prompt_id' (or 'id') must be a non-empty string")
    if "prompt" not in obj or not obj["prompt"]:
        raise _err(path, line, "field 'prompt' is missing or empty")
    if not isinstance(obj.get("completion"), str):
        raise _err(path, line, "field 'completion' must be a string (the sampled response)")
    if "reward" not in obj:
        raise _err(path, line, "field 'reward' is missing; use null for a failed score")
    r = obj["reward"]
    if r is not None and (isinstance(r, bool) or not isinstance(r, (int, float)) or not math.isfinite(r)):
        raise _err(path, line, f"field 'reward' must be a finite number or null (got {r!r})")
    return pid, (None if r is None else float(r)), obj


def group_scored(path: str | Path) -> dict[str, list[tuple[int, float | None, dict[str, Any]]]]:
    """prompt id -> [(line, reward, row), ...] in file order."""
    path = Path(path)
    groups: dict[str, list] = {}
    for line, obj in read_jsonl(path):
        pid, reward, row = _scored_row(obj, path, line)
        groups.setdefault(pid, []).append((line, reward, row))
    if not groups:
        raise DatasetError(f"{path}: no scored rollouts in the file")
    return groups


def pair_from_group(pid: str, samples: list[tuple[int, float | None, dict[str, Any]]]) -> dict[str, Any] | None:
    """Top-reward vs bottom-reward sample of one prompt, or None when they tie.

    Ties at the top or bottom go to the earliest sample (deterministic).

    >>> s = [(1, 0.0, {"prompt": "p", "completion": "a"}), (2, 1.0, {"prompt": "p", "completion": "b"})]
    >>> pair_from_group("x", s)["chosen"], pair_from_group("x", s)["rejected"]
    ('b', 'a')
    >>> pair_from_group("x", [s[0], s[0]]) is None
    True
    """
    scored = [(r, line, row) for line, r, row in samples if r is not None]
    if len(scored) < 2:
        return None
    best = max(scored, key=lambda t: (t[0], -t[1]))
    worst = min(scored, key=lambda t: (t[0], t[1]))
    if best[0] == worst[0]:
        return None
    out = {"id": pid, "prompt": best[2]["prompt"], "chosen": best[2]["completion"],
           "rejected": worst[2]["completion"], "chosen_reward": best[0], "rejected_reward": worst[0]}
    out.update({k: best[2][k] for k in PASS_THROUGH if k in best[2]})
    return out


def build_pairs(path: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(pairs, counts) from a scored-rollouts JSONL."""
    groups = group_scored(path)
    pairs = [p for pid, s in groups.items() if (p := pair_from_group(pid, s)) is not None]
    return pairs, {"prompts": len(groups), "pairs": len(pairs), "skipped_ties": len(groups) - len(pairs)}


# ------------------------------------------------------------------------------ reading pairs


def _side(value: Any, path: Path | str, line: int, name: str) -> list[dict[str, str]]:
    """A response side as an assistant-message list; errors name the row and side."""
    if isinstance(value, str):
        if not value.strip():
            raise _err(path, line, f"field '{name}' is empty; every pair needs a non-empty {name} response")
        return [{"role": "assistant", "content": value}]
    if isinstance(value, list) and value and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str)
            for m in value):
        if not any(m["content"].strip() for m in value):
            raise _err(path, line, f"field '{name}' is empty; every pair needs a non-empty {name} response")
        return [{"role": m["role"], "content": m["content"]} for m in value]
    if value is None:
        raise _err(path, line, f"field '{name}' is missing; every pair needs 'prompt', 'chosen' and 'rejected'")
    raise _err(path, line, f"field '{name}' must be a string or a list of chat messages")


def normalize_pair(obj: Any, path: Path | str, line: int) -> dict[str, Any]:
    """A pair row in TRL's conversational preference format (prompt messages + sides)."""
    if not isinstance(obj, dict):
        raise _err(path, line, f"row must be a JSON object, got {type(obj).__name__}")
    prompt = obj.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        messages = prompt_messages({"prompt": prompt})
    elif isinstance(prompt, list) and prompt and all(
            isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str)
            for m in prompt):
        messages = [{"role": m["role"], "content": m["content"]} for m in prompt]
    else:
        raise _err(path, line, "field 'prompt' is missing or empty (a string or a list of chat messages)")
    return {"prompt": messages, "chosen": _side(obj.get("chosen"), path, line, "chosen"),
            "rejected": _side(obj.get("rejected"), path, line, "rejected")}


def load_pairs(path: str | Path, max_rows: int | None = None) -> list[dict[str, Any]]:
    path = Path(path)
    rows = [normalize_pair(obj, path, line) for line, obj in read_jsonl(path)]
    if not rows:
        raise DatasetError(f"{path}: no preference pairs in the file")
    return rows[:max_rows] if max_rows else rows
