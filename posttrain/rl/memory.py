"""Memory levers of the trainer that do not change its arithmetic.

A tied embedding (Qwen2.5, Llama 3.2 1B/3B, Gemma: the lm_head shares the input embedding's weight)
receives two gradients in every backward: a dense one from the lm_head and, at the very end, one
from the embedding lookup. nn.Embedding's dense backward materialises a vocab x hidden tensor of
zeros for the handful of rows the batch used, and autograd then sums it with the lm_head's
gradient: at Qwen2.5-0.5B's shape that is two extra 545 MB tensors at the step's peak (measured:
+1,037 MiB at the embedding's backward in each FSDP worker). With `sparse=True` the lookup's
gradient holds only the rows it used, and autograd adds it into the lm_head's dense gradient in
place, so the parameter still gets one dense gradient (what AdamW and FSDP need). Untied embeddings
keep dense gradients: a sparse gradient would reach the optimizer directly.
"""

from __future__ import annotations

import torch


def sparse_tied_embedding_grad(model: torch.nn.Module) -> bool:
    """Give a trainable tied input embedding a sparse lookup gradient; True if it was tied and trainable."""
    get_in = getattr(model, "get_input_embeddings", None)
    get_out = getattr(model, "get_output_embeddings", None)
    emb = get_in() if get_in else None
    head = get_out() if get_out else None
    if not isinstance(emb, torch.nn.Embedding) or head is None or getattr(head, "weight", None) is None:
        return False
    if head.weight is not emb.weight or not emb.weight.requires_grad:
        return False
    emb.sparse = True
    return True
