"""mpo_loss against numbers worked out by hand.

Batch of two pairs, beta = 0.5, delta = 1.0, weights (0.8, 0.2, 1.0).

Pair 1: policy chosen -1, ref chosen -3 -> r_c = 2, beta*r_c = 1
        policy rejected -4, ref rejected -2 -> r_r = -2, beta*r_r = -1
        L_pref    = -log sig(0.5 * 4)              = log(1 + e^-2)              = 0.126928
        L_quality = -log sig(1 - 1) - log sig(-(-1 - 1)) = log 2 + log(1 + e^-2) = 0.820075
        L_gen     = 1.5
Pair 2: all log-probs 0 -> r_c = r_r = 0
        L_pref    = log 2                                                      = 0.693147
        L_quality = -log sig(-1) - log sig(1) = log(1 + e) + log(1 + e^-1)      = 1.626523
        L_gen     = 0.5
Means: pref 0.410038, quality 1.223299, gen 1.0
L = 0.8 * 0.410038 + 0.2 * 1.223299 + 1.0 * 1.0 = 1.572690
Rewards beta*r: chosen (1, 0), rejected (-1, 0) -> reward_mean 0, margin 1, accuracy 0.5.
"""

import math

import torch

from posttrain.losses import mpo_loss


def _inputs():
    t = torch.tensor
    return t([-1.0, 0.0]), t([-4.0, 0.0]), t([-3.0, 0.0]), t([-2.0, 0.0]), t([1.5, 0.5])


def test_mpo_loss_hand_computed():
    loss, m = mpo_loss(*_inputs(), beta=0.5, delta=1.0)
    pref = (math.log1p(math.exp(-2)) + math.log(2)) / 2
    quality = (math.log(2) + math.log1p(math.exp(-2)) + math.log1p(math.e) + math.log1p(math.exp(-1))) / 2
    torch.testing.assert_close(loss, torch.tensor(0.8 * pref + 0.2 * quality + 1.0))
    torch.testing.assert_close(loss, torch.tensor(1.572690), atol=1e-5, rtol=0)
    assert m["mpo/reward_mean"] == 0.0
    assert m["mpo/reward_margin"] == 1.0
    assert m["mpo/reward_accuracy"] == 0.5
    torch.testing.assert_close(torch.tensor(m["mpo/loss_quality"]), torch.tensor(1.223299), atol=1e-5, rtol=0)


def test_delta_shifts_only_the_quality_term():
    l0, m0 = mpo_loss(*_inputs(), beta=0.5, delta=0.0, weights=(1.0, 0.0, 0.0))
    l1, m1 = mpo_loss(*_inputs(), beta=0.5, delta=3.0, weights=(1.0, 0.0, 0.0))
    torch.testing.assert_close(l0, l1)
    assert m0["mpo/loss_quality"] != m1["mpo/loss_quality"]


def test_gradient_flows_to_policy_logps():
    pc, pr, rc, rr, nll = _inputs()
    pc.requires_grad_(True)
    pr.requires_grad_(True)
    loss, _ = mpo_loss(pc, pr, rc, rr, nll, beta=0.5, delta=1.0)
    loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # raise chosen, lower rejected
