"""Supervised datasets in TRL's formats, read from JSONL, Parquet or a `datasets` name.

Accepted rows (one format per source; checked row by row, errors name file:row):
- prompt/completion: `{"prompt": str, "completion": str}` or conversational
  `{"prompt": [msgs], "completion": [msgs]}`;
- conversational `{"messages": [msgs]}`: split into prompt = all but the last turn and
  completion = the last (assistant) turn, so the loss falls on that turn by default;
- language modeling `{"text": str}` (loss on the whole text);
- our dataset contract `{"id", "prompt", "answer"}`: prompt becomes the user turn and
  the answer the assistant turn (the tokenizer's chat template renders both).
Rows with `images` / `video` (our contract's, or prompt/completion rows such as RFT's kept
samples) become TRL's vision rows: content parts and `images` in slot order (`media_row`).
Several sources are mixed by weight (`mix_sources`), sampling with replacement when a
source must contribute more rows than it has. `add_hinted_copies` adds, for rows of our
contract with `hints`, copies whose prompt carries a hint (so a model learns to read hints
before RL hints its hard prompts).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from hints.inject import DEFAULT_TEMPLATE, with_hint
from posttrain.core.data import N_HINT_LEVELS, DatasetError, check_data_file, check_hints, prompt_messages, read_jsonl
from posttrain.core.media import MediaError, check_media, has_media
from rollouts.media import expand_media

FORMATS = ("prompt_completion", "conversational", "text")


@dataclass
class SourceRows:
    """Normalized rows of one source and the TRL format they are in."""

    name: str
    fmt: str  # one of FORMATS
    rows: list[dict[str, Any]]
    lines: list[int] = field(default_factory=list)  # the file line (row number) of each row


def _err(where: str, row: int, msg: str) -> DatasetError:
    return DatasetError(f"{where}:{row}: {msg}")


def _check_messages(msgs: Any, where: str, row: int, field: str) -> list[dict[str, str]]:
    if not isinstance(msgs, list) or not msgs:
        raise _err(where, row, f"field '{field}' must be a non-empty list of chat messages")
    for i, m in enumerate(msgs):
        if not (isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)):
            raise _err(where, row, f"{field}[{i}] must be an object with string 'role' and 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def _nonempty(text: Any, where: str, row: int, field: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise _err(where, row, f"field '{field}' is missing or empty; every row needs a non-empty {field}")
    return text


def normalize_row(obj: Any, where: str, row: int) -> tuple[str, dict[str, Any]]:
    """(format, normalized row) for one input row, or a DatasetError naming where:row."""
    if not isinstance(obj, dict):
        raise _err(where, row, f"row must be a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        msgs = _check_messages(obj["messages"], where, row, "messages")
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise _err(where, row, "field 'messages' must end with an assistant turn after at least one other turn")
        _nonempty(msgs[-1]["content"], where, row, "messages[-1].content")
        return "conversational", {"prompt": msgs[:-1], "completion": [msgs[-1]]}
    if "prompt" in obj and "completion" in obj and has_media(obj):  # e.g. RFT's kept samples of image rows
        return "conversational", media_row(obj, where, row)
    if "prompt" in obj and "completion" in obj:
        p, c = obj["prompt"], obj["completion"]
        if isinstance(p, str) and isinstance(c, str):
            return "prompt_completion", {"prompt": _nonempty(p, where, row, "prompt"),
                                         "completion": _nonempty(c, where, row, "completion")}
        prompt = [{"role": "user", "content": _nonempty(p, where, row, "prompt")}] if isinstance(p, str) \
            else _check_messages(p, where, row, "prompt")
        completion = [{"role": "assistant", "content": _nonempty(c, where, row, "completion")}] \
            if isinstance(c, str) else _check_messages(c, where, row, "completion")
        if not any(m["content"].strip() for m in completion):
            raise _err(where, row, "field 'completion' is empty; every row needs a non-empty completion")
        return "conversational", {"prompt": prompt, "completion": completion}
    if "prompt" in obj and "answer" in obj and has_media(obj):  # our contract, with images / video
        return "conversational", media_row(obj, where, row)
    if "prompt" in obj and "answer" in obj:  # our dataset contract
        p = obj["prompt"]
        prompt = prompt_messages({"prompt": _nonempty(p, where, row, "prompt") if isinstance(p, str)
                                  else _check_messages(p, where, row, "prompt")})
        answer = _nonempty(obj["answer"], where, row, "answer")
        return "conversational", {"prompt": prompt, "completion": [{"role": "assistant", "content": answer}]}
    if "text" in obj:
        return "text", {"text": _nonempty(obj["text"], where, row, "text")}
    raise _err(where, row, f"unknown row format (keys: {', '.join(sorted(obj)) or 'none'}); expected "
                           "prompt+completion, messages, text, or id+prompt+answer")


def media_row(obj: dict[str, Any], where: str, row: int) -> dict[str, Any]:
    """A row with media (our contract's `answer`, or a `completion`: a string or assistant messages) in
    TRL's vision format: the prompt as content parts (a video spelled out as its frames with SlowFast
    markers, every frame at its native size), the answer as the assistant turn, and `images`: the
    paths in slot order, resolved relative to the file."""
    messages, images = media_prompt(obj, where, row)
    if "completion" in obj and not isinstance(obj["completion"], str):
        completion = _check_messages(obj["completion"], where, row, "completion")
        _nonempty("".join(m["content"] for m in completion), where, row, "completion")
    else:
        field = "completion" if "completion" in obj else "answer"
        completion = [{"role": "assistant", "content": _nonempty(obj[field], where, row, field)}]
    return {"prompt": messages, "completion": completion, "images": images}


def media_prompt(obj: dict[str, Any], where: str, row: int) -> tuple[list[dict[str, Any]], list[str]]:
    """(prompt messages as content parts, image paths in slot order) of a row with media, its paths
    resolved relative to the file `where`; bad media is a DatasetError naming where:row and the row id.
    A video is spelled out as its frames with SlowFast markers, every frame at its native size."""
    try:
        checked = check_media(dict(obj), Path(where).parent)
        messages, media = expand_media(checked, count_tokens=lambda h, w: 1)  # no budget: frames keep their size
    except (MediaError, ValueError) as e:
        raise _err(where, row, f"row {obj.get('id')!r}: {e}") from None
    return messages, list(media.images)


def normalize_rows(objs: Iterable[tuple[int, Any]], where: str) -> SourceRows:
    fmt, rows, lines = None, [], []
    for n, obj in objs:
        f, r = normalize_row(obj, where, n)
        if fmt is not None and f != fmt:
            raise _err(where, n, f"row is in {f!r} format but earlier rows are {fmt!r}; one format per source")
        fmt = f
        rows.append(r)
        lines.append(n)
    if not rows:
        raise DatasetError(f"{where}: dataset has no rows")
    return SourceRows(where, fmt, rows, lines)


def check_lengths(src: SourceRows, tokenizer: Any, max_length: int | None) -> None:
    """Refuse rows longer than train.max_length tokens: TRL would truncate them silently
    and the example would train without (part of) its answer."""
    if not max_length:
        return
    if src.fmt == "text":
        texts = [r["text"] for r in src.rows]
    elif src.fmt == "prompt_completion":
        texts = [r["prompt"] + r["completion"] for r in src.rows]
    else:
        texts = [tokenizer.apply_chat_template(r["prompt"] + r["completion"], tokenize=False) for r in src.rows]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    over = [i for i, n in enumerate(lengths) if n > max_length]
    if over:
        i = over[0]
        raise _err(src.name, src.lines[i] if src.lines else i + 1,
                   f"row is {lengths[i]} tokens, over train.max_length={max_length} (it would be cut and train "
                   f"without its answer; {len(over)} rows are over); shorten or drop it, or raise train.max_length")


def _raw_rows(path: str | None, name: str | None, subset: str | None, split: str) -> tuple[str, list]:
    """(where, [(row number, object)]) from a local file or a `datasets` name."""
    if path:
        p = Path(path)
        if p.is_dir():
            check_data_file(p)  # says it is a directory
        suffix = p.suffix.lower()
        if suffix in (".jsonl", ".json"):
            return str(p), read_jsonl(p)
        if suffix == ".parquet":
            if not p.is_file():
                raise DatasetError(f"{p}: dataset file does not exist")
            from datasets import Dataset

            ds = Dataset.from_parquet(str(p))
            return str(p), [(i + 1, r) for i, r in enumerate(ds)]
        raise DatasetError(f"{p}: unknown dataset file type {suffix!r}; use .jsonl, .json or .parquet")
    from datasets import load_dataset

    ds = load_dataset(name, subset, split=split)
    return f"{name}[{split}]", [(i + 1, r) for i, r in enumerate(ds)]


def add_hinted_copies(objs: list[tuple[int, Any]], where: str, copies: int, seed: int = 0,
                      template: str | None = None) -> list[tuple[int, Any]]:
    """The rows, and after each row that has `hints` (levels 1-5) `copies` more whose prompt
    carries the hint of a distinct level drawn with a seeded RNG; copies keep the row number."""
    if not 0 <= copies <= N_HINT_LEVELS:
        raise ValueError(f"hinted copies must be 0-{N_HINT_LEVELS} (one per level at most), got {copies}")
    rng = random.Random(seed)
    out: list[tuple[int, Any]] = []
    for n, obj in objs:
        out.append((n, obj))
        hints = obj.get("hints") if isinstance(obj, dict) and "answer" in obj else None
        if not copies or hints is None:
            continue
        check_hints(hints, where, n)
        for level in sorted(rng.sample(range(1, N_HINT_LEVELS + 1), copies)):
            hinted = with_hint(obj, level, hints[level - 1], template or DEFAULT_TEMPLATE)
            out.append((n, {k: v for k, v in hinted.items() if k != "hints"}))
    return out


def load_source(path: str | None = None, name: str | None = None, subset: str | None = None,
                split: str = "train", hinted_copies: int = 0, hint_seed: int = 0,
                hint_template: str | None = None, task: str | list[str] | None = None) -> SourceRows:
    """A source's rows; with `task`, only the rows whose 'task' field is that (or one of those)."""
    if not path and not name:
        raise DatasetError("a data source needs 'path' (local JSONL/Parquet) or 'name' (a datasets name)")
    where, objs = _raw_rows(path, name, subset, split)
    if task is not None:
        tasks = [task] if isinstance(task, str) else list(task)
        objs = [(n, o) for n, o in objs if isinstance(o, dict) and o.get("task") in tasks]
        if not objs:
            raise DatasetError(f"{where}: no rows with task {task!r} (data.task)")
    if hinted_copies:
        objs = add_hinted_copies(objs, where, hinted_copies, hint_seed, hint_template)
    return normalize_rows(objs, where)


def mix_sources(sources: list[SourceRows], weights: list[float], total: int | None = None,
                seed: int = 0) -> SourceRows:
    """Mix sources so that source i gives round(total * w_i / sum(w)) rows.

    `total` defaults to the sum of the source sizes. Rows within a source are taken in
    a seeded shuffled order, cycling (with repeats) when more are needed than exist.
    """
    if len(sources) != len(weights) or not sources:
        raise ValueError("mix_sources needs one weight per source and at least one source")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"data weights must be >= 0 with a positive sum (got {weights})")
    fmts = {s.fmt for s in sources}
    if len(fmts) > 1:
        desc = ", ".join(f"{s.name}: {s.fmt}" for s in sources)
        raise DatasetError(f"cannot mix sources in different formats ({desc}); convert them to one format")
    total = sum(len(s.rows) for s in sources) if total is None else total
    rng = random.Random(seed)
    mixed: list[dict[str, Any]] = []
    for s, w in zip(sources, weights):
        k = round(total * w / sum(weights))
        order = list(range(len(s.rows)))
        rng.shuffle(order)
        mixed.extend(s.rows[order[i % len(order)]] for i in range(k))
    rng.shuffle(mixed)
    return SourceRows("+".join(s.name for s in sources), sources[0].fmt, mixed)


def to_dataset(src: SourceRows):
    from datasets import Dataset

    return Dataset.from_list(src.rows)
