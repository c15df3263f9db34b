"""The benchmark model: a randomly initialised 27M-parameter Qwen2 (hidden 512, 8 layers,
8 heads of 64), with the addition task's tokenizer (posttrain.tasks.tiny), tied embeddings.

make_tiny_model fixes the MLP at 4 x hidden (33.6M without embeddings at this size), so
the config is built here with intermediate 1536: 8 x 3.41M + 0.26M embeddings = 27.5M.
With tied embeddings, 2 x params is the matmul FLOPs per token (the embedding lookup is
free, the LM head is the same matrix).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from posttrain.tasks.addition import make_addition_rows
from posttrain.tasks.tiny import IM_END, row_texts, train_tokenizer

SPEC = {"hidden": 512, "layers": 8, "heads": 8, "head_dim": 64, "intermediate": 1536, "vocab": 512, "seed": 0}


def addition_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    return make_addition_rows(n, digits=2, terms=2, seed=seed, prefix="bench")


def make_bench_model(out: str | Path) -> tuple[Path, int]:
    """Build (or reuse) the model folder; returns (path, parameter count)."""
    out = Path(out)
    meta = out / "bench_model.json"
    if meta.is_file():
        info = json.loads(meta.read_text())
        if info.get("spec") == SPEC:
            return out, int(info["parameters"])
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    rows = addition_rows(2000)
    tok = train_tokenizer([t for r in rows for t in row_texts(r)], SPEC["vocab"])
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    im_end = tok.convert_tokens_to_ids(IM_END)
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=SPEC["hidden"], intermediate_size=SPEC["intermediate"],
                      num_hidden_layers=SPEC["layers"], num_attention_heads=SPEC["heads"],
                      num_key_value_heads=SPEC["heads"], head_dim=SPEC["head_dim"], max_position_embeddings=512,
                      tie_word_embeddings=True, bos_token_id=tok.pad_token_id, eos_token_id=im_end,
                      pad_token_id=tok.pad_token_id, torch_dtype="float32")
    torch.manual_seed(SPEC["seed"])
    model = Qwen2ForCausalLM(cfg)
    model.generation_config = GenerationConfig(eos_token_id=im_end, pad_token_id=tok.pad_token_id,
                                               bos_token_id=tok.pad_token_id)
    model.save_pretrained(out, safe_serialization=True)
    params = sum(p.numel() for p in model.parameters())
    meta.write_text(json.dumps({"spec": SPEC, "parameters": params}, indent=2))
    return out, params
