"""Mixed precision with a bf16 working copy: fp32 master weights in the optimizer, bf16 compute.

Why not autocast: autocast keeps the model fp32 and casts at every op. The residual stream
stays fp32, so every linear re-casts its input, every elementwise op between a bf16 matmul
output and an fp32 tensor runs on mixed dtypes, and every weight is cast on every forward
(and its gradient cast back in backward). On the benchmark GSPO update that overhead ate most
of the bf16 matmul speed-up (docs/precision.md, "Where the bf16 update's time went").

`WorkingCopy` is what FSDP's `MixedPrecisionPolicy(param_dtype=bfloat16)` and Megatron's
distributed optimizer do: the forward and backward run on a bf16 copy of the parameters; the
bf16 gradients are moved onto the fp32 master parameters, the optimizer steps those, and the
bf16 copy is refreshed from them once per optimizer step. The master model is untouched
otherwise (its state dict, checkpoints and weight sync stay fp32).

Buffers stay fp32 in the copy: the rotary inverse frequencies rounded to bf16 would shift
the angle of position 100 by ~0.2 rad.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class WorkingCopy:
    """A `dtype` copy of `master`'s parameters to run forward and backward on."""

    def __init__(self, master: nn.Module, dtype: torch.dtype = torch.bfloat16):
        self.master = master
        self.module = copy.deepcopy(master)
        with torch.no_grad():
            for p in self.module.parameters():  # parameters only (tied ones once): buffers stay fp32
                p.data = p.data.to(dtype)
        masters = dict(master.named_parameters())
        self.pairs = [(masters[name], p) for name, p in self.module.named_parameters()]  # (fp32, bf16)

    def forward_model(self) -> nn.Module:
        """The bf16 module, in the master's train/eval mode."""
        return self.module.train(self.master.training)

    def grads_to_master(self) -> None:
        """Move the bf16 gradients of the last backward onto the fp32 master parameters (accumulating)."""
        for master, work in self.pairs:
            if work.grad is None:
                continue
            g = work.grad.to(master.dtype)
            master.grad = g if master.grad is None else master.grad.add_(g)
            work.grad = None

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the (stepped) fp32 master weights into the bf16 parameters: one cast per optimizer step."""
        for master, work in self.pairs:
            work.copy_(master)
