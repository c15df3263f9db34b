"""GSPO / GRPO losses against numbers worked out by hand."""

import math

import pytest
import torch
from torch.testing import assert_close

from posttrain.losses import grpo_loss, gspo_loss, kl_penalty


def test_gspo_unclipped_hand_computed():
    """Two sequences of two tokens, both ratios inside the clip range.

    seq 1: log-ratio per token [1e-4, 1e-4] -> s_1 = e^1e-4 = 1.000100005, A_1 = 2
    seq 2: log-ratio per token [0, -2e-4]   -> s_2 = e^-1e-4 = 0.999900005, A_2 = -0.5
    J = (2 * 1.000100005 - 0.5 * 0.999900005) / 2 = 0.750125002; loss = -J.
    d loss / d logprob_{1,t} = -(A_1 * s_1 / |y_1|) / B = -(2 * 1.0001 / 2) / 2 = -0.50005
    """
    old = torch.zeros(2, 2, dtype=torch.float64)
    lp = torch.tensor([[1e-4, 1e-4], [0.0, -2e-4]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([2.0, -0.5], dtype=torch.float64)
    mask = torch.ones(2, 2)
    loss, metrics = gspo_loss(lp, old, adv, mask)
    expected = -(2 * math.exp(1e-4) - 0.5 * math.exp(-1e-4)) / 2
    assert_close(loss, torch.tensor(expected, dtype=torch.float64))
    loss.backward()
    assert_close(lp.grad[0], torch.full((2,), -(2 * math.exp(1e-4) / 2) / 2, dtype=torch.float64))
    assert metrics["rl/clip_frac"] == 0.0


def test_gspo_clipping_at_eps():
    """seq 1: s = e^0.001 > 1 + 4e-4 with A = +1 -> clipped to 1.0004 (no gradient).
    seq 2: s = e^-0.001 < 1 - 3e-4 with A = -1 -> min(-0.9990005, -0.9997) = -0.9997.
    J = (1.0004 - 0.9997) / 2 = 3.5e-4."""
    old = torch.zeros(2, 2, dtype=torch.float64)
    lp = torch.tensor([[1e-3, 1e-3], [-2e-3, 0.0]], dtype=torch.float64, requires_grad=True)
    adv = torch.tensor([1.0, -1.0], dtype=torch.float64)
    loss, metrics = gspo_loss(lp, old, adv, torch.ones(2, 2))
    assert_close(loss, torch.tensor(-3.5e-4, dtype=torch.float64))
    loss.backward()
    assert torch.all(lp.grad == 0)
    assert metrics["rl/clip_frac"] == 1.0
    assert metrics["rl/clip_frac_high"] == 0.5 and metrics["rl/clip_frac_low"] == 0.5


def test_gspo_clip_does_not_bind_on_the_favourable_side():
    """A > 0 with s < 1 - eps_low: min() keeps the unclipped s*A, so the gradient flows."""
    lp = torch.tensor([[-1e-2]], dtype=torch.float64, requires_grad=True)
    loss, _ = gspo_loss(lp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                        torch.ones(1, 1))
    assert_close(loss, torch.tensor(-math.exp(-1e-2), dtype=torch.float64))
    loss.backward()
    assert lp.grad.item() != 0


def test_mask_excludes_padding_and_lengths_normalise():
    """Padding positions (mask 0) change nothing; the ratio is a per-length mean."""
    old = torch.zeros(1, 3, dtype=torch.float64)
    lp = torch.tensor([[1e-4, 3e-4, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0]])
    loss, _ = gspo_loss(lp, old, torch.tensor([1.0], dtype=torch.float64), mask)
    assert_close(loss, torch.tensor(-math.exp(2e-4), dtype=torch.float64))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gspo_token_gradient_equals_gspo_with_one_advantage_per_sequence(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    B, T = 4, 6
    old = torch.randn(B, T, generator=g, dtype=dtype) * 0.1 - 2
    lp0 = old + torch.randn(B, T, generator=g, dtype=dtype) * 1e-3
    mask = (torch.rand(B, T, generator=g) > 0.2).to(dtype)
    mask[:, 0] = 1
    adv = torch.randn(B, generator=g, dtype=dtype)
    grads, losses = [], []
    for variant in ("sequence", "token"):
        lp = lp0.clone().requires_grad_(True)
        loss, _ = gspo_loss(lp, old, adv, mask, eps_low=0.2, eps_high=0.2, variant=variant)
        loss.backward()
        grads.append(lp.grad)
        losses.append(loss.detach())
    assert_close(losses[0], losses[1])
    assert_close(grads[0], grads[1])


def test_grpo_token_ratio_hand_computed():
    """One sequence, tokens with ratios e^0.1 (A=1, clipped at 1.28? no: e^0.1=1.105 < 1.28)
    and e^0.5 = 1.6487 clipped to 1.28: J = (1.10517 + 1.28) / 2."""
    lp = torch.tensor([[0.1, 0.5]], dtype=torch.float64)
    loss, metrics = grpo_loss(lp, torch.zeros(1, 2, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64),
                              torch.ones(1, 2))
    assert_close(loss, torch.tensor(-(math.exp(0.1) + 1.28) / 2, dtype=torch.float64))
    assert metrics["rl/clip_frac"] == 0.5


def test_unknown_variant():
    with pytest.raises(ValueError, match="variant"):
        gspo_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1), torch.ones(1, 1), variant="bogus")


def test_kl_penalty_k3_hand_computed():
    """k3 = exp(d) - d - 1 with d = ref - logprob, per response mean, then batch mean.

    seq 1: d = [0, 1]            -> k3 = [0, e - 2 = 0.718281828], mean 0.359140914
    seq 2: d = [-1, (padded)]    -> k3 = [e^-1 = 0.367879441], mean over 1 token
    KL = (0.359140914 + 0.367879441) / 2 = 0.363510178.
    d k3 / d logprob = 1 - exp(d): seq 1 token 2: (1 - e) / 2 tokens / 2 seqs = -0.429570457;
    seq 2 token 1: (1 - e^-1) / 1 / 2 = 0.316060279; token 1 of seq 1 (d = 0) and padding: 0.
    """
    lp = torch.tensor([[-1.0, -2.0], [-0.5, 0.0]], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0], [-1.5, 0.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1], [1, 0]])
    kl, metrics = kl_penalty(lp, ref, mask)
    assert_close(kl, torch.tensor(((math.e - 2) / 2 + math.exp(-1)) / 2, dtype=torch.float64))
    kl.backward()
    assert_close(lp.grad, torch.tensor([[0.0, (1 - math.e) / 4], [(1 - math.exp(-1)) / 2, 0.0]], dtype=torch.float64))
    assert metrics["rl/kl_ref"] == pytest.approx(0.363510178)
    assert metrics["rl/logprob_minus_ref"] == pytest.approx(0.0)  # (0 - 1 + 1) / 3 tokens


def test_kl_penalty_is_zero_at_the_reference():
    lp = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    kl, _ = kl_penalty(lp, lp.detach().clone(), torch.ones(3, 4))
    kl.backward()
    assert float(kl) == 0.0 and float(lp.grad.abs().max()) == 0.0
