"""Tiny models and tokenizers built locally and deterministically (no hub).

The tokenizer is a byte-level BPE trained on the task's own text, with digits split
one per token (arithmetic learns far faster that way) and a Qwen-style chat template.
The model is a seeded Qwen2 with head_dim >= 32 (vLLM's CPU attention rejects 16).
Four heads of 32 learn 2-digit addition far sooner than two of 64 (55% vs 5% held-out
accuracy after 500 SFT steps in one measurement here).
Both are saved with `save_pretrained`, so transformers, TRL and vLLM load the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import torch

from posttrain.core.data import load_rows, prompt_messages

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def row_texts(row: dict[str, Any]) -> Iterable[str]:
    for m in prompt_messages(row):
        yield m["content"]
    for key in ("answer", "completion", "chosen", "rejected", "response"):
        if isinstance(row.get(key), str):
            yield row[key]
    yield from row.get("hints") or []


def train_tokenizer(texts: Iterable[str], vocab_size: int = 512):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # "user", "assistant" and newlines must tokenize; include the template's own text.
    chat_text = ["user\n", "assistant\n", "system\n", "\n"]
    tok.train_from_iterator(list(texts) + chat_text, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, eos_token=IM_END, bos_token=None, unk_token=None,
        additional_special_tokens=[IM_START],
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.padding_side = "left"
    return fast


def make_tiny_model(
    data: str | Path | list[dict[str, Any]],
    out: str | Path,
    hidden: int = 128,
    layers: int = 4,
    heads: int = 4,
    head_dim: int = 32,
    vocab_size: int = 512,
    seed: int = 0,
    max_positions: int = 512,
    extra_texts: Iterable[str] = (),
    kv_heads: int | None = None,
    intermediate: int | None = None,
    embedding_rows: int | None = None,
) -> Path:
    """Build and save a tiny Qwen2 causal LM and its tokenizer under `out`. `kv_heads`
    (grouped-query attention, default `heads`), `intermediate` (default 4 x hidden) and
    `embedding_rows` (default the tokenizer's size; more rows give a real model's embedding
    size, e.g. Qwen2.5's 151936, while the local tokenizer uses the first few) shape
    real-size architectures with random weights (configs/scale/)."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    if head_dim < 32:
        raise ValueError(f"head_dim={head_dim}: vLLM's CPU attention needs head_dim >= 32 (use 64)")
    rows = load_rows(data, require_answer=False) if not isinstance(data, list) else data
    texts = [t for row in rows for t in row_texts(row)] + list(extra_texts)
    tokenizer = train_tokenizer(texts, vocab_size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)

    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    if embedding_rows is not None and embedding_rows < len(tokenizer):
        raise ValueError(f"embedding_rows={embedding_rows} is smaller than the tokenizer ({len(tokenizer)} tokens)")
    config = Qwen2Config(
        vocab_size=embedding_rows or len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate or hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads or heads,
        head_dim=head_dim,
        max_position_embeddings=max_positions,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=im_end,
        pad_token_id=tokenizer.pad_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=im_end, pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(out, safe_serialization=True)
    (out / "posttrain_tiny.json").write_text(json.dumps(
        {"hidden": hidden, "layers": layers, "heads": heads, "head_dim": head_dim,
         "kv_heads": config.num_key_value_heads, "intermediate": config.intermediate_size,
         "embedding_rows": config.vocab_size, "vocab_size": len(tokenizer), "seed": seed,
         "parameters": sum(p.numel() for p in model.parameters())}, indent=2))
    return out
