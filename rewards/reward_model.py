"""`reward_model`: a sequence-classification reward model (one logit) in a Ray actor.

Any HF folder whose model loads with `AutoModelForSequenceClassification` and has
`num_labels == 1` works. Text = the row's prompt and the completion through the
tokenizer's chat template (or `prompt + "\\n" + completion` without one); scored in
batches, right-padded. The score is the raw logit (or its sigmoid with
`normalize="sigmoid"`); a non-finite logit is a failure of that sample.

    reward: {components: [{name: reward_model, kwargs: {model: runs/rm, batch_size: 8}}]}
"""

from __future__ import annotations

import math
from typing import Any

import torch

from rewards.api import RewardResult, reward_service
from rewards.ray_actors import ActorHandle


def build_text(tokenizer: Any, sample: dict, completion: str) -> str:
    prompt = sample.get("prompt", "")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": completion}],
                                             tokenize=False)
    return "\n".join(m["content"] for m in messages) + "\n" + completion


class RewardModelWorker:
    """The actor body (plain class so it can be tested without Ray)."""

    def __init__(self, path: str, max_length: int = 1024, dtype: str = "float32", threads: int | None = None):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, dtype))
        if self.model.config.num_labels != 1:
            raise ValueError(f"{path}: a reward model needs num_labels == 1 (one logit), "
                             f"got {self.model.config.num_labels}")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.tokenizer.padding_side = "right"
        self.model.eval()
        self.max_length = max_length

    def ready(self) -> bool:
        return True

    def score(self, samples: list[dict], completions: list[str], batch_size: int) -> list[float]:
        texts = [build_text(self.tokenizer, s, c) for s, c in zip(samples, completions)]
        out: list[float] = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = self.tokenizer(texts[i:i + batch_size], return_tensors="pt", padding=True, truncation=True,
                                     max_length=self.max_length)
                logits = self.model(**enc).logits  # (B, 1)
                out.extend(logits[:, 0].float().tolist())
        return out


@reward_service("reward_model")
class RewardModelReward:
    """Scores with a sequence-classification reward model served by a Ray actor."""

    def __init__(self, model: str, batch_size: int = 8, max_length: int = 1024, dtype: str = "float32",
                 normalize: str = "none", timeout_s: float = 120.0, start_timeout_s: float = 300.0,
                 retries: int = 1, num_cpus: float = 1.0, threads: int | None = None):
        import ray

        if normalize not in ("none", "sigmoid"):
            raise ValueError(f"normalize={normalize!r}: use 'none' or 'sigmoid'")
        self.batch_size, self.normalize = batch_size, normalize
        remote = ray.remote(RewardModelWorker).options(num_cpus=num_cpus, max_restarts=0)
        self.handle = ActorHandle("reward_model", lambda: remote.remote(model, max_length, dtype, threads),
                                  start_timeout_s, timeout_s, retries)

    def score(self, completions: list[str], samples: list[dict]) -> list[RewardResult]:
        try:
            logits = self.handle.call("score", list(samples), list(completions), self.batch_size)
        except RuntimeError as e:
            return [RewardResult.fail(str(e))] * len(completions)
        out = []
        for x in logits:
            if not math.isfinite(x):
                out.append(RewardResult.fail(f"non-finite reward-model logit {x}"))
            elif self.normalize == "sigmoid":
                out.append(RewardResult(1.0 / (1.0 + math.exp(-x))))
            else:
                out.append(RewardResult(float(x)))
        return out

    def close(self) -> None:
        self.handle.close()
