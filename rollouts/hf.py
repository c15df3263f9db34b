"""An in-process `Generator` on transformers `generate`: small models and tests.

Prompts and their n samples run as left-padded batches of up to `max_batch` sequences
(a prompt asking for more than max_batch samples still runs as one batch); the torch
seed of a batch derives from (sampling.seed, step, first prompt id), so the same call
gives the same samples.
`logprobs[t]` is the raw model log-probability of the sampled token (before
temperature / top-p), like vLLM's default. `token_ids` end with the EOS token when the
sample stopped (finish_reason "stop"); `text` is decoded without special tokens.
"""

from __future__ import annotations

import hashlib
from typing import Any, Sequence

import torch

from posttrain.core.models import is_image_text_model, load_causal_lm, load_processor, load_tokenizer
from rollouts.media import load_media
from rollouts.types import PromptInput, Rollout, SamplingSpec


def unit_seed(seed: int, step: int, prompt_id: str) -> int:
    digest = hashlib.sha256(f"{seed}:{step}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


class HFGenerator:
    """Generator protocol over a HF causal LM held in this process."""

    def __init__(self, model_or_path: Any, tokenizer: Any = None, device: str | None = "cpu",
                 dtype: str = "float32", max_batch: int = 256, processor: Any = None):
        """`device=None` keeps a given model where it is (a model being trained, say). An image-text
        model needs its `processor` (loaded with the folder) for prompts with media."""
        if isinstance(model_or_path, (str, bytes)) or hasattr(model_or_path, "__fspath__"):
            self.model = load_causal_lm(str(model_or_path), dtype)
            tokenizer = tokenizer or load_tokenizer(str(model_or_path))
            if processor is None and is_image_text_model(str(model_or_path)):
                processor = load_processor(str(model_or_path))
        else:
            self.model = model_or_path
        if tokenizer is None:
            raise ValueError("HFGenerator needs a tokenizer when given a model object")
        self.tokenizer = tokenizer
        self.processor = processor
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self.device = next(self.model.parameters()).device
        self.max_batch = max_batch
        self.weight_version = 0
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id

    def _sample(self, prompts: Sequence[PromptInput], sampling: SamplingSpec, n: int, seed: int):
        """Left-padded batch of n samples for each prompt: (new tokens, raw log-probs) per sample."""
        inputs, prompt_ids = self._inputs(prompts, n)
        width = inputs["input_ids"].shape[1]
        greedy = sampling.temperature <= 0
        kwargs = {} if greedy else {"temperature": sampling.temperature, "top_p": sampling.top_p, "top_k": 0}
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=devices):  # the caller's RNG stream is left alone
            torch.manual_seed(seed)
            out = self.model.generate(
                **inputs, do_sample=not greedy,
                max_new_tokens=sampling.max_tokens, pad_token_id=self.pad_id, eos_token_id=self.eos_id,
                return_dict_in_generate=True, output_logits=True, **kwargs)
        new = out.sequences[:, width:]  # (B, R)
        logits = torch.stack(out.logits, dim=1).float()  # (B, R, V) raw, before temperature
        logps = torch.log_softmax(logits, -1).gather(-1, new.unsqueeze(-1)).squeeze(-1)  # (B, R)
        return new.tolist(), logps.tolist(), prompt_ids

    def _inputs(self, prompts: Sequence[PromptInput], n: int) -> tuple[dict[str, torch.Tensor], list[list[int]]]:
        """Left-padded model inputs of n copies of each prompt, and each copy's prompt ids. Media
        prompts go through the processor, which expands their image tokens and makes the pixels."""
        if not any(p.media for p in prompts):
            flat = [list(p.token_ids) for p in prompts for _ in range(n)]
            width = max(len(t) for t in flat)
            ids = torch.tensor([[self.pad_id] * (width - len(t)) + t for t in flat], device=self.device)  # (B, P)
            mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in flat], device=self.device)
            return {"input_ids": ids, "attention_mask": mask}, flat
        if self.processor is None or not all(p.media for p in prompts):
            raise ValueError("prompts with images need the model's processor, and a batch must not mix text and "
                             "media prompts (docs/multimodal.md)")
        texts = [self.tokenizer.decode(p.token_ids) for p in prompts for _ in range(n)]
        images = [load_media(p.media) for p in prompts for _ in range(n)]
        enc = self.processor(text=texts, images=images, padding=True, padding_side="left", return_tensors="pt",
                             add_special_tokens=False)
        inputs = {k: v.to(self.device) for k, v in enc.items() if isinstance(v, torch.Tensor)}
        ids = [row[m.bool()].tolist() for row, m in zip(enc["input_ids"], enc["attention_mask"])]
        return inputs, ids

    def _rollout(self, prompt: PromptInput, idx: int, toks: list[int], lps: list[float], step: int,
                 prompt_ids: list[int]) -> Rollout:
        finish = "length"
        if self.eos_id in toks:
            cut = toks.index(self.eos_id) + 1
            toks, lps, finish = toks[:cut], lps[:cut], "stop"
        text = self.tokenizer.decode(toks, skip_special_tokens=True)
        return Rollout(prompt.prompt_id, idx, prompt_ids, toks, lps, text, finish,
                       self.weight_version, step)

    def generate(self, prompts: Sequence[PromptInput], sampling: SamplingSpec, step: int = 0) -> list[Rollout]:
        """Prompts are batched (up to max_batch sequences per generate call); samples stay grouped by prompt."""
        out: list[Rollout] = []
        per_call = max(1, self.max_batch // sampling.n)
        for i in range(0, len(prompts), per_call):
            chunk = list(prompts[i:i + per_call])
            toks, lps, pids = self._sample(chunk, sampling, sampling.n,
                                           unit_seed(sampling.seed, step, chunk[0].prompt_id))
            for j, p in enumerate(chunk):
                for k in range(sampling.n):
                    b = j * sampling.n + k
                    out.append(self._rollout(p, k, toks[b], lps[b], step, pids[b]))
        return out

    def update_weights(self, state_dict: dict[str, Any], version: int) -> None:
        self.model.load_state_dict(state_dict, strict=True)
        self.weight_version = version

    def close(self) -> None:
        self.model = None
