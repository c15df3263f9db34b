"""A tiny vision-language model built locally and deterministically (no hub).

Idefics3 (the SmolVLM family) is the one image-text architecture whose vLLM model runs on
this machine (no CPU torchvision here; vLLM's Qwen2-VL, InternVL, LLaVA and Gemma 3 paths
import it: ../shared/ENVIRONMENT.md). The model is a seeded `Idefics3ForConditionalGeneration`
(a SigLIP-style vision tower, the pixel-shuffle connector, a Llama text model with head_dim
>= 32 for vLLM's CPU attention) and its processor: the PIL image processor resizing every image
to `image_size` (no splitting: one image = `image_seq_len` tokens plus 3 around it), and the
text tokenizer of posttrain/tasks/tiny.py trained on the task text, plus Idefics3's special
tokens. Saved with `save_pretrained`, so `AutoProcessor`, `AutoModelForImageTextToText`,
TRL and vLLM load the folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable

import torch

from posttrain.core.data import load_rows
from posttrain.core.video import frame_marker
from posttrain.tasks.tiny import IM_END, make_tiny_model, row_texts, train_tokenizer

IDEFICS3_TOKENS = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
# Strings as content or as content parts ({"type": "image"} -> "<image>"), one template for both.
VISION_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'image' %}{{ '<image>' }}"
    "{% elif part['type'] == 'video' %}{{ '<video>' }}{% else %}{{ part['text'] }}{% endif %}{% endfor %}"
    "{% endif %}{{ '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def vision_row_texts(row: dict[str, Any]) -> Iterable[str]:
    """A row's text for the tokenizer, with content parts flattened to their text."""
    flat = dict(row)
    if isinstance(row.get("prompt"), list):
        flat["prompt"] = [{"role": m["role"], "content": m["content"] if isinstance(m["content"], str) else
                           "".join(p.get("text", "") for p in m["content"])} for m in row["prompt"]]
    return row_texts(flat)


def make_tiny_vision_model(
    data: str | Path | list[dict[str, Any]],
    out: str | Path,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 4,
    head_dim: int = 32,
    vision_hidden: int = 64,
    vision_layers: int = 1,
    image_size: int = 56,
    patch_size: int = 14,
    scale_factor: int = 2,
    vocab_size: int = 512,
    seed: int = 0,
    max_positions: int = 1024,
) -> Path:
    """Build and save a tiny Idefics3 model and its processor under `out`."""
    from transformers import (GenerationConfig, Idefics3Config, Idefics3ForConditionalGeneration,
                              Idefics3ImageProcessorPil, Idefics3Processor, LlamaConfig)
    from transformers.models.idefics3 import Idefics3VisionConfig

    if head_dim < 32:
        raise ValueError(f"head_dim={head_dim}: vLLM's CPU attention needs head_dim >= 32")
    if image_size % (patch_size * scale_factor):
        raise ValueError(f"image_size={image_size} must be a multiple of patch_size * scale_factor "
                         f"({patch_size * scale_factor}) for the pixel-shuffle connector")
    rows = load_rows(data, require_answer=False) if not isinstance(data, list) else data
    markers = [frame_marker(s, t / 2) for s in (True, False) for t in range(20)]
    tokenizer = train_tokenizer([t for row in rows for t in vision_row_texts(row)] + markers, vocab_size)
    tokenizer.add_tokens(IDEFICS3_TOKENS, special_tokens=True)
    tokenizer.chat_template = VISION_CHAT_TEMPLATE
    image_seq_len = (image_size // patch_size) ** 2 // scale_factor**2
    processor = Idefics3Processor(
        image_processor=Idefics3ImageProcessorPil(
            size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
            do_image_splitting=False),
        tokenizer=tokenizer, image_seq_len=image_seq_len, chat_template=VISION_CHAT_TEMPLATE)

    im_end = tokenizer.convert_tokens_to_ids(IM_END)
    pad = tokenizer.pad_token_id
    config = Idefics3Config(
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=hidden * 4,
            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads, head_dim=head_dim,
            max_position_embeddings=max_positions, bos_token_id=pad, eos_token_id=im_end, pad_token_id=pad,
            tie_word_embeddings=False),
        vision_config=Idefics3VisionConfig(
            hidden_size=vision_hidden, intermediate_size=vision_hidden * 4, num_hidden_layers=vision_layers,
            num_attention_heads=max(1, vision_hidden // 32), image_size=image_size, patch_size=patch_size),
        scale_factor=scale_factor, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        pad_token_id=pad, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=im_end, pad_token_id=pad, bos_token_id=pad)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    (out / "posttrain_tiny.json").write_text(json.dumps(
        {"family": "idefics3", "hidden": hidden, "layers": layers, "heads": heads, "head_dim": head_dim,
         "vision_hidden": vision_hidden, "vision_layers": vision_layers, "image_size": image_size,
         "patch_size": patch_size, "image_seq_len": image_seq_len, "vocab_size": len(tokenizer), "seed": seed,
         "parameters": sum(p.numel() for p in model.parameters())}, indent=2))
    return out


def make_tiny_from_config(model: Any, data: str | Path, out: str | Path) -> Path:
    """The `model.init: tiny` model of a ModelConfig: a Qwen2 LM, or with `tiny_vision` an Idefics3
    image-text model, its tokenizer trained on `data`."""
    kw = dict(hidden=model.tiny_hidden, layers=model.tiny_layers, heads=model.tiny_heads,
              head_dim=model.tiny_head_dim, vocab_size=model.tiny_vocab, seed=0)
    if model.tiny_vision:
        return make_tiny_vision_model(data, out, **kw)
    return make_tiny_model(data, out, **kw, kv_heads=model.tiny_kv_heads, intermediate=model.tiny_intermediate,
                           embedding_rows=model.tiny_embedding_rows)
