"""A small in-process `Generator` on HF `generate`, for the probe CLI and the ablation.

Stop-gap until `rollouts.make_generator` (vLLM in Ray actors) or a shared HF generator
lands; torch and transformers are imported when it is built, not at module import.
Seeding: one torch seed per call, from (sampling.seed, step, first prompt id), so a
call is reproducible but a unit does not sample the same tokens in a different batch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence


def chat_encoder(tokenizer):
    """encode(prompt) -> token ids: the chat template with a generation prompt."""

    def encode(prompt: Any) -> list[int]:
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if hasattr(ids, "keys") else ids)

    return encode


class HFGenerator:
    weight_version = 0

    def __init__(self, model: str | Path | Any, tokenizer: Any = None, batch_size: int = 64,
                 threads: int | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if threads:
            torch.set_num_threads(threads)
        if isinstance(model, (str, Path)):
            if not (Path(model) / "config.json").is_file():
                raise FileNotFoundError(f"--model {model}: not a HF model folder (no config.json)")
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(model)
            model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos = tokenizer.eos_token_id

    def encode(self, prompt: Any) -> list[int]:
        return chat_encoder(self.tokenizer)(prompt)

    def _chunk(self, prompts: Sequence[Any], sampling: Any, step: int) -> list[Any]:
        import torch

        from rollouts.seeding import unit_seed
        from rollouts.types import Rollout

        width = max(len(p.token_ids) for p in prompts)
        ids = torch.tensor([[self.pad] * (width - len(p.token_ids)) + list(p.token_ids) for p in prompts])  # (B, T)
        mask = (torch.arange(width)[None, :] >= torch.tensor([width - len(p.token_ids) for p in prompts])[:, None]).long()
        torch.manual_seed(unit_seed(sampling.seed, (step, prompts[0].prompt_id)))
        sample = sampling.temperature > 0
        out = self.model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=sampling.max_tokens, do_sample=sample,
            temperature=sampling.temperature if sample else None, top_p=sampling.top_p if sample else None,
            top_k=0 if sample else None,
            num_return_sequences=sampling.n, pad_token_id=self.pad, eos_token_id=self.eos,
            output_scores=True, return_dict_in_generate=True)
        scores = self.model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)  # (B*n, new)
        rollouts = []
        for row, seq in enumerate(out.sequences[:, width:].tolist()):
            p = prompts[row // sampling.n]
            end = seq.index(self.eos) + 1 if self.eos in seq else len(seq)
            toks = seq[:end]
            rollouts.append(Rollout(
                prompt_id=p.prompt_id, sample_idx=row % sampling.n, prompt_token_ids=list(p.token_ids),
                token_ids=toks, logprobs=scores[row, :end].tolist(),
                text=self.tokenizer.decode(toks, skip_special_tokens=True),
                finish_reason="stop" if end < len(seq) or self.eos in seq else "length",
                weight_version=self.weight_version, step=step))
        return rollouts

    def generate(self, prompts: Sequence[Any], sampling: Any, step: int = 0) -> list[Any]:
        import torch

        per_call = max(1, self.batch_size // max(sampling.n, 1))
        out: list[Any] = []
        with torch.no_grad():
            for i in range(0, len(prompts), per_call):
                out.extend(self._chunk(prompts[i:i + per_call], sampling, step))
        return out

    def update_weights(self, state_dict: dict[str, Any], version: int) -> None:
        self.model.load_state_dict(state_dict)
        self.weight_version = version

    def close(self) -> None:
        pass
