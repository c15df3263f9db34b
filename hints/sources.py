"""Where hint text comes from: the dataset row's `hints` list, or a teacher model.

A teacher is any `Generator` (vLLM actors, HF generate, a fake in tests). Each level
has its own prompt template. Generated hints are cached in a JSONL file keyed by
(prompt id, level, teacher name), so each hint is made once across runs and rounds;
the cache is append-only and a torn last line (after a kill) is ignored.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from hints.inject import question_text
from hints.levels import HINT_LEVELS, check_level
from rollouts.types import PromptInput, SamplingSpec

DEFAULT_TEACHER_TEMPLATES: dict[int, str] = {
    1: "State the key concept or observation needed for this problem in one sentence. "
       "Do not solve it.\nProblem: {question}",
    2: "Name the strategy or method to solve this problem in one sentence. "
       "Do not solve it.\nProblem: {question}",
    3: "Give the formula or tool to apply to this problem. Do not give the answer.\n"
       "Problem: {question}",
    4: "List the intermediate steps and calculations for this problem, "
       "stopping before the final answer.\nProblem: {question}",
    5: "Write the complete solution to this problem, ending with the final answer.\n"
       "Problem: {question}\nReference answer: {answer}",
}


class HintSourceError(ValueError):
    """A hint that cannot be found or made; the message names the row and the fix."""


class HintSource(Protocol):
    def hints(self, rows: Sequence[dict[str, Any]], level: int) -> list[str]:
        """One hint per row at `level` (1-5)."""
        ...


class DatasetHints:
    """Hints from each row's `hints` list: hints[level - 1]."""

    def hints(self, rows: Sequence[dict[str, Any]], level: int) -> list[str]:
        level = check_level(level)
        if level == 0:
            return [""] * len(rows)
        out = []
        for row in rows:
            hints = row.get("hints")
            if not isinstance(hints, list) or len(hints) < level:
                raise HintSourceError(
                    f"row {row.get('id')!r} has no level-{level} hint (field 'hints' must be a list "
                    "of 5 strings); add hints to the dataset or set hints.source=teacher")
            out.append(hints[level - 1])
        return out


def _read_cache(path: Path) -> dict[tuple[str, int, str], str]:
    cache: dict[tuple[str, int, str], str] = {}
    if not path.exists():
        return cache
    lines = path.read_text().splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            cache[(rec["prompt_id"], int(rec["level"]), rec["teacher"])] = rec["hint"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError):
            if n == len(lines):  # a torn last line after a kill: that hint is made again
                continue
            raise HintSourceError(f"{path}:{n}: not a hint-cache record; delete the line or the file "
                                  "(hints are regenerated)") from None
    return cache


@dataclass
class TeacherHints:
    """Hints generated per level by a teacher model, cached on disk.

    `encode` turns a prompt (string or chat messages) into the teacher's token ids
    (usually the tokenizer's chat template with a generation prompt).
    """

    generator: Any  # rollouts.Generator
    encode: Callable[[Any], list[int]]
    teacher: str
    cache_path: str | Path
    templates: dict[int, str] = field(default_factory=lambda: dict(DEFAULT_TEACHER_TEMPLATES))
    max_tokens: int = 128
    temperature: float = 0.0
    generate_calls: int = 0
    failures: list[tuple[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.cache_path = Path(self.cache_path)
        missing = [k for k in HINT_LEVELS if k not in self.templates]
        if missing:
            raise HintSourceError(f"teacher templates miss levels {missing}; give one template per level 1-5")
        self._cache = _read_cache(self.cache_path)

    def _append(self, records: list[dict[str, Any]]) -> None:
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with self.cache_path.open("a") as f:
            for rec in records:
                f.write(json.dumps(rec) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def _teacher_prompt(self, row: dict[str, Any], level: int) -> str:
        question = question_text(row["prompt"], f"row {row.get('id')!r}")
        return self.templates[level].format(question=question, answer=row.get("answer", ""))

    def _generate(self, rows: list[dict[str, Any]], level: int) -> list[str]:
        prompts = [PromptInput(r["id"], self.encode(self._teacher_prompt(r, level))) for r in rows]
        sampling = SamplingSpec(n=1, temperature=self.temperature, max_tokens=self.max_tokens)
        self.generate_calls += 1
        rollouts = self.generator.generate(prompts, sampling, step=0)
        return [r.text.strip() for r in rollouts]

    def hints(self, rows: Sequence[dict[str, Any]], level: int) -> list[str]:
        level = check_level(level)
        if level == 0:
            return [""] * len(rows)
        missing = [r for r in rows if (r["id"], level, self.teacher) not in self._cache]
        missing = list({r["id"]: r for r in missing}.values())
        if missing:
            texts = self._generate(missing, level)
            records = []
            for row, text in zip(missing, texts):
                if not text:  # not cached: an empty hint is retried next time
                    self.failures.append((row["id"], level))
                    continue
                self._cache[(row["id"], level, self.teacher)] = text
                records.append({"prompt_id": row["id"], "level": level, "teacher": self.teacher, "hint": text})
            self._append(records)
        return [self._cache.get((r["id"], level, self.teacher), "") for r in rows]
