"""A scripted fake Generator: a prompt is answered correctly once its hint is high enough.

Prompts are encoded as UTF-8 bytes, so the fake reads the hint level back from the
text: rows carry hints "<L1>".."<L5>". `script[prompt_id]` is the lowest level that
is answered correctly (None: never; 0: always), and `correct_of_g` how many of G are.
"""

from __future__ import annotations

import re

from rollouts.types import Rollout


def encode(prompt) -> list[int]:
    text = prompt if isinstance(prompt, str) else "\n".join(m["content"] for m in prompt)
    return list(text.encode())


def make_rows(ids, answer="42"):
    return [{"id": i, "prompt": f"Question {i}?", "answer": answer,
             "hints": [f"<L{k}>" for k in range(1, 6)]} for i in ids]


class ScriptedGenerator:
    def __init__(self, script: dict, answer: str = "42", correct_of_g: int | None = None):
        self.script, self.answer, self.correct_of_g = script, answer, correct_of_g
        self.weight_version = 0
        self.calls: list[list[tuple[str, int]]] = []

    def level_of(self, token_ids) -> int:
        found = re.findall(r"<L(\d)>", bytes(token_ids).decode())
        return int(found[-1]) if found else 0

    def generate(self, prompts, sampling, step=0):
        out, call = [], []
        for p in prompts:
            level = self.level_of(p.token_ids)
            call.append((p.prompt_id, level))
            need = self.script.get(p.prompt_id)
            ok = need is not None and level >= need
            n_ok = sampling.n if self.correct_of_g is None else min(self.correct_of_g, sampling.n)
            for j in range(sampling.n):
                text = self.answer if ok and j < n_ok else "wrong"
                out.append(Rollout(p.prompt_id, j, list(p.token_ids), [1], [0.0], text, step=step))
        self.calls.append(call)
        return out

    def update_weights(self, state_dict, version):
        self.weight_version = version

    def close(self):
        pass


def exact_judge(texts, rows):
    return [t.strip() == r["answer"] for t, r in zip(texts, rows)]
