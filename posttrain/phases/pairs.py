"""Preference pairs: built from scored rollouts, read and checked for training.

Scored rollouts (`posttrain data pairs --input`) are JSONL rows
`{"prompt_id" (or "id"), "prompt", "completion", "reward"}`, G rows per prompt. A pair
takes a top-reward sample as `chosen` and a bottom-reward one as `rejected`; prompts
whose samples all tie (or have fewer than two scored, non-empty samples) give no pair.
Rows with `reward: null` (a failed reward) are left out, never read as 0.

Pair rows are `{"id", "prompt", "chosen", "rejected"}` with `prompt` a string or a
message list and the sides strings or assistant-message lists (TRL's formats). A pair may
carry its prompt's `images` / `video` (the data contract's media, passed through from the
scored rows): it is read in TRL's vision format, the prompt as content parts and `images`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from posttrain.core.data import DatasetError, prompt_messages, read_jsonl
from posttrain.core.media import has_media
from posttrain.phases.sft_data import media_prompt

PASS_THROUGH = ("answer", "task", "images", "video")


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

    Ties at the top or bottom go to the earliest sample (deterministic). Empty completions are
    left out: a pair side needs text (a barely trained model samples EOS first).

    >>> s = [(1, 0.0, {"prompt": "p", "completion": "a"}), (2, 1.0, {"prompt": "p", "completion": "b"})]
    >>> pair_from_group("x", s)["chosen"], pair_from_group("x", s)["rejected"]
    ('b', 'a')
    >>> pair_from_group("x", [s[0], s[0]]) is None
    True
    """
    scored = [(r, line, row) for line, r, row in samples if r is not None and row["completion"].strip()]
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


def more_pairs(pid: str, samples: list[tuple[int, float | None, dict[str, Any]]], per_prompt: int,
               reference: bool, top_reward: float) -> list[dict[str, Any]]:
    """Up to `per_prompt` pairs of distinct (top-reward text, bottom-reward text) of one prompt.

    With `reference`, the row's reference `answer` joins the top texts when the group's best
    reward is below `top_reward` (the best reward in the file), so prompts whose samples are
    all wrong give pairs too (the reference beats a wrong sample, as in Keye's RM data).

    >>> s = [(1, 0.0, {"prompt": "p", "completion": "a", "answer": "c"}),
    ...      (2, 0.0, {"prompt": "p", "completion": "b", "answer": "c"})]
    >>> [(x["chosen"], x["rejected"]) for x in more_pairs("x", s, 3, True, 1.0)]
    [('c', 'a'), ('c', 'b')]
    >>> more_pairs("x", s, 3, False, 1.0)
    []
    """
    scored = [(r, row) for _, r, row in samples if r is not None]
    if not scored:
        return []
    best, worst = max(r for r, _ in scored), min(r for r, _ in scored)
    first = scored[0][1]
    tops = [] if best == worst else [row["completion"] for r, row in scored if r == best]
    chosen_reward = best
    if reference and best < top_reward and isinstance(first.get("answer"), str) and first["answer"].strip():
        tops, chosen_reward = [first["answer"], *tops], top_reward
    bottoms = [row["completion"] for r, row in scored if r == worst and row["completion"].strip()]
    pairs = []
    for c in dict.fromkeys(tops):  # distinct texts, so every (c, rj) combination is new
        for rj in dict.fromkeys(bottoms):
            if len(pairs) >= per_prompt or c.strip() == rj.strip():
                continue
            out = {"id": f"{pid}" if not pairs else f"{pid}#{len(pairs)}", "prompt_id": pid, "prompt": first["prompt"],
                   "chosen": c, "rejected": rj, "chosen_reward": chosen_reward, "rejected_reward": worst}
            out.update({k: first[k] for k in PASS_THROUGH if k in first})
            pairs.append(out)
    return pairs


def build_pairs(path: str | Path, per_prompt: int = 1, reference: bool = False
                ) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """(pairs, counts) from a scored-rollouts JSONL: one top-vs-bottom pair per prompt by
    default; `per_prompt` > 1 or `reference` use `more_pairs` (ids `pid`, `pid#1`, ... and a
    `prompt_id` field, so held-out splits can go by prompt)."""
    groups = group_scored(path)
    if per_prompt == 1 and not reference:
        by_prompt = {pid: [p] if (p := pair_from_group(pid, s)) is not None else [] for pid, s in groups.items()}
    else:
        top = max((r for s in groups.values() for _, r, _ in s if r is not None), default=0.0)
        by_prompt = {pid: more_pairs(pid, s, per_prompt, reference, top) for pid, s in groups.items()}
    pairs = [p for ps in by_prompt.values() for p in ps]
    skipped = sum(not ps for ps in by_prompt.values())
    return pairs, {"prompts": len(groups), "pairs": len(pairs), "skipped_ties": skipped}


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
    if has_media(obj) and prompt:  # TRL's vision format: content parts and the image paths in slot order
        messages, images = media_prompt(obj, str(path), line)
        return {"prompt": messages, "chosen": _side(obj.get("chosen"), path, line, "chosen"),
                "rejected": _side(obj.get("rejected"), path, line, "rejected"), "images": images}
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


def check_pair_lengths(path: str | Path, tokenizer: Any, max_length: int | None) -> None:
    """Refuse pairs whose prompt + side is over train.max_length tokens, by file and line: TRL
    would cut the side (DPO/MPO then prefers a truncated answer) or drop the pair unseen (RM)."""
    if not max_length:
        return
    tok = getattr(tokenizer, "tokenizer", tokenizer)  # a processor's text tokenizer
    path = Path(path)
    for line, obj in read_jsonl(path):
        pair = normalize_pair(obj, path, line)
        texts = [tok.apply_chat_template(pair["prompt"] + pair[side], tokenize=False) for side in ("chosen", "rejected")]
        for side, ids in zip(("chosen", "rejected"), tok(texts, add_special_tokens=False)["input_ids"]):
            if len(ids) > max_length:
                raise _err(path, line, f"prompt + {side} is {len(ids)} tokens, over train.max_length={max_length} "
                           "(it would be cut or dropped); shorten or drop the pair, or raise train.max_length")
