"""Dataset rows (the JSONL contract) and a resumable prompt sampler.

A row is `{"id": str, "prompt": str | [{"role", "content"}, ...], "answer": str,
"hints": [5 strings] (optional)}`; unknown keys pass through to rewards. Rows may carry
images and a video (`images`, `video`, with `<image>` / `<video>` placeholders: the contract is
in core/media.py); media paths resolve relative to the file. Every problem is reported with
the file and line it came from.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from posttrain.core.media import MediaError, check_media, valid_content_parts

N_HINT_LEVELS = 5


class DatasetError(ValueError):
    """A bad dataset file or row; the message names the file and line."""


def _row_error(path: Path, line: int, msg: str) -> DatasetError:
    return DatasetError(f"{path}:{line}: {msg}")


def validate_row(row: Any, path: Path, line: int, require_answer: bool = True) -> dict[str, Any]:
    if not isinstance(row, dict):
        raise _row_error(path, line, f"row must be a JSON object, got {type(row).__name__}")
    rid = row.get("id")
    if not isinstance(rid, str) or not rid:
        raise _row_error(path, line, "field 'id' must be a non-empty string")
    prompt = row.get("prompt")
    if isinstance(prompt, list):
        for i, msg in enumerate(prompt):
            if not (isinstance(msg, dict) and isinstance(msg.get("role"), str)
                    and (isinstance(msg.get("content"), str) or valid_content_parts(msg.get("content")))):
                raise _row_error(path, line, f"prompt message {i} must have string 'role' and 'content' "
                                 "(or content parts of type text/image/video)")
        if not prompt:
            raise _row_error(path, line, "field 'prompt' is an empty message list")
    elif not isinstance(prompt, str) or not prompt.strip():
        raise _row_error(path, line, "field 'prompt' must be a non-empty string or a list of chat messages")
    if require_answer and not isinstance(row.get("answer"), str):
        raise _row_error(path, line, "field 'answer' must be a string")
    if row.get("hints") is not None:
        check_hints(row["hints"], str(path), line)
    try:
        check_media(row, Path(path).parent)
    except MediaError as e:
        raise _row_error(path, line, f"row {rid!r}: {e}") from None
    return row


def check_hints(hints: Any, where: str, line: int) -> list[str]:
    """A row's `hints`: one string per level 1-5, or a DatasetError naming where:line."""
    if not (isinstance(hints, list) and len(hints) == N_HINT_LEVELS and all(isinstance(h, str) for h in hints)):
        raise DatasetError(f"{where}:{line}: field 'hints' must be a list of {N_HINT_LEVELS} strings (levels 1-5)")
    return hints


def read_jsonl(path: str | Path) -> list[tuple[int, Any]]:
    """(line number, parsed object) for every non-blank line; JSON errors name the line."""
    path = check_data_file(path)
    out = []
    with path.open("rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise _row_error(path, n, f"not valid UTF-8 (byte {raw[e.start]:#04x} at byte {e.start + 1}); "
                                 "re-encode the file as UTF-8") from None
            if not text.strip():
                continue
            try:
                out.append((n, json.loads(text)))
            except json.JSONDecodeError as e:
                raise _row_error(path, n, f"not valid JSON ({e.msg} at column {e.colno})") from None
    return out


def check_data_file(path: str | Path) -> Path:
    """A dataset path that is a readable file, or a DatasetError saying what it is instead."""
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"{path}: is a directory, not a dataset file; give the .jsonl file inside it")
    if not path.is_file():
        raise DatasetError(f"{path}: dataset file does not exist")
    return path


def load_rows(path: str | Path, require_answer: bool = True) -> list[dict[str, Any]]:
    path = Path(path)
    rows, seen = [], {}
    for n, obj in read_jsonl(path):
        row = validate_row(obj, path, n, require_answer)
        if row["id"] in seen:
            raise _row_error(path, n, f"duplicate id {row['id']!r} (first on line {seen[row['id']]})")
        seen[row["id"]] = n
        rows.append(row)
    if not rows:
        raise DatasetError(f"{path}: dataset file has no rows")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write atomically: a crash never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    tmp.replace(path)


def prompt_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    prompt = row["prompt"]
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def dataset_fingerprint(rows: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True).encode())
    return h.hexdigest()[:16]


@dataclass
class PromptSampler:
    """Epoch-based sampler: each row exactly once per epoch, order fixed by (seed, epoch).

    Its state is (epoch, position) plus the dataset fingerprint, so a resumed run
    continues the same order and refuses a changed dataset.
    """

    num_rows: int
    seed: int = 0
    shuffle: bool = True
    fingerprint: str = ""
    epoch: int = 0
    position: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def _epoch_order(self, epoch: int) -> list[int]:
        order = list(range(self.num_rows))
        if self.shuffle:
            random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def next_batch(self, size: int) -> list[int]:
        out: list[int] = []
        while len(out) < size:
            if not self._order:
                self._order = self._epoch_order(self.epoch)
            take = min(size - len(out), self.num_rows - self.position)
            out.extend(self._order[self.position:self.position + take])
            self.position += take
            if self.position == self.num_rows:
                self.epoch, self.position, self._order = self.epoch + 1, 0, []
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "position": self.position, "seed": self.seed,
                "num_rows": self.num_rows, "fingerprint": self.fingerprint}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_rows"] != self.num_rows or state.get("fingerprint", "") != self.fingerprint:
            raise DatasetError(
                "refusing to resume: the training dataset changed since the checkpoint "
                f"(rows {state['num_rows']} -> {self.num_rows}, fingerprint "
                f"{state.get('fingerprint')} -> {self.fingerprint}); start a new run instead"
            )
        self.seed = state["seed"]
        self.epoch, self.position, self._order = state["epoch"], state["position"], []


def check_prompt_lengths(path: str | Path, rows: list[dict[str, Any]], tokenizer: Any, limit: int, why: str) -> None:
    """Refuse rows whose chat-templated prompt is over `limit` tokens, named by file and
    line (a 10 MB row must be an error, not a 40 GB allocation or a silent cut)."""
    texts = [tokenizer.apply_chat_template(prompt_messages(r), tokenize=False, add_generation_prompt=True)
             for r in rows]
    lengths = [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]
    over = [i for i, n in enumerate(lengths) if n > limit]
    if over:
        i = over[0]
        line = [n for n, _ in read_jsonl(path)][i]
        raise _row_error(Path(path), line, f"row {rows[i]['id']!r} has a {lengths[i]}-token prompt, over the "
                         f"{limit} tokens {why} ({len(over)} rows are over); shorten or drop it")


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the chat-templated prompt, ready for the assistant's turn."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])
