import math

import torch
from torch.testing import assert_close

from posttrain.advantages import group_advantages


def test_group_normalised_hand_computed():
    """Group [1, 0, 0, 1]: mean 0.5, population std 0.5 -> [1, -1, -1, 1].
    Group [3, 1]: mean 2, std 1 -> [1, -1]."""
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), group_size=4)
    assert_close(adv, torch.tensor([1.0, -1.0, -1.0, 1.0]))
    assert_close(group_advantages(torch.tensor([3.0, 1.0]), 2), torch.tensor([1.0, -1.0]))


def test_equal_rewards_give_zero_not_nan():
    adv = group_advantages(torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]), group_size=3)
    assert torch.all(adv == 0)
    assert not torch.isnan(adv).any()


def test_failed_rewards_are_left_out():
    """NaN (a failed reward) gets 0 and does not enter its group's mean/std:
    valid [1, 0] -> mean 0.5, std 0.5 -> [1, -1]; the NaN slot -> 0."""
    adv = group_advantages(torch.tensor([1.0, math.nan, 0.0]), group_size=3)
    assert_close(adv, torch.tensor([1.0, 0.0, -1.0]))
    only_one_valid = group_advantages(torch.tensor([math.nan, 1.0]), group_size=2)
    assert torch.all(only_one_valid == 0)


def test_loop_matches_vectorised():
    g = torch.Generator().manual_seed(0)
    r = torch.randint(0, 3, (40,), generator=g).float()
    adv = group_advantages(r, 8)
    for i in range(0, 40, 8):
        grp = r[i:i + 8]
        std = grp.std(unbiased=False)
        want = (grp - grp.mean()) / std if std > 1e-6 else torch.zeros(8)
        assert_close(adv[i:i + 8], want)


def test_bad_shape_is_an_error():
    import pytest
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        group_advantages(torch.zeros(6), 4)
