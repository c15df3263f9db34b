"""Weight sync sends the engines' dtype: bf16 to bf16 engines, fp32 to fp32 ones."""

from __future__ import annotations

import torch

from rollouts.actors import engine_weights


def test_floating_tensors_take_the_engine_dtype_and_integers_stay():
    sd = {"w": torch.randn(3, 4), "step": torch.tensor([7], dtype=torch.long)}
    bf = engine_weights(sd, "bfloat16")
    assert bf["w"].dtype == torch.bfloat16 and bf["step"].dtype == torch.long
    torch.testing.assert_close(bf["w"].float(), sd["w"], atol=1e-2, rtol=1e-2)
    fp = engine_weights(sd, "float32")
    assert fp["w"].dtype == torch.float32 and torch.equal(fp["w"], sd["w"])
