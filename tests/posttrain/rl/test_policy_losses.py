"""Each policy loss declares its settings; the algo section is checked against them at load time."""

import pytest
import torch

from posttrain.core.config import ConfigError, load_config
from posttrain.losses import grpo_loss
from posttrain.rl.config import Config
from posttrain.rl.policy_losses import POLICY_LOSSES


def test_registry_names_and_unknown_loss():
    assert {"gspo", "gspo_token", "grpo"} <= set(POLICY_LOSSES.names())
    with pytest.raises(KeyError, match="unknown policy loss 'ppo'"):
        POLICY_LOSSES.get("ppo")


def test_declared_settings_come_from_each_loss():
    assert POLICY_LOSSES.get("gspo").settings == {"eps_low": 3e-4, "eps_high": 4e-4}
    assert POLICY_LOSSES.get("gspo_token").settings == {"eps_low": 3e-4, "eps_high": 4e-4}
    assert POLICY_LOSSES.get("grpo").settings == {"eps_low": 0.2, "eps_high": 0.28}


def test_grpo_without_clip_settings_clips_at_grpos_own_range():
    """ratio e^0.25 = 1.284 is inside GRPO's 1.28 clip? No: it is clipped to 1.28 by GRPO's eps_high,
    where the old shared default (GSPO's 4e-4) would have clipped it to 1.0004."""
    cfg = load_config(Config, None, ["algo.loss=grpo"])
    assert cfg.algo.loss_args == {}
    loss_fn = POLICY_LOSSES.get(cfg.algo.loss).bind(cfg.algo.loss_args)
    lp = torch.tensor([[0.25]], dtype=torch.float64)
    args = (lp, torch.zeros(1, 1, dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64), torch.ones(1, 1))
    loss, _ = loss_fn(*args)
    assert loss.item() == pytest.approx(-1.28)
    assert loss.item() == pytest.approx(grpo_loss(*args)[0].item())


def test_flat_and_nested_settings_are_one_setting():
    flat = load_config(Config, None, ["algo.loss=grpo", "algo.eps_high=0.3"])
    nested = load_config(Config, None, ["algo.loss=grpo", "algo.loss_args={eps_high: 0.3}"])
    assert flat.algo.loss_args == nested.algo.loss_args == {"eps_high": 0.3}
    with pytest.raises(ConfigError, match="given both flat and under algo.loss_args"):
        load_config(Config, None, ["algo.eps_high=0.3", "algo.loss_args={eps_high: 0.2}"])


def test_unknown_setting_names_the_loss_and_its_settings():
    with pytest.raises(ConfigError, match=r"policy loss 'grpo' has no setting 'clip'.*eps_low=0.2, eps_high=0.28"):
        load_config(Config, None, ["algo.loss=grpo", "algo.clip=0.1"])
    with pytest.raises(ConfigError, match=r"did you mean 'eps_high'"):
        load_config(Config, None, ["algo.eps_hihg=0.1"])
    with pytest.raises(ConfigError, match=r"did you mean algo.num_minibatches"):
        load_config(Config, None, ["algo.num_minibatch=2"])
    with pytest.raises(ConfigError, match=r"algo.loss_args.eps_low.: Input should be a valid number"):
        load_config(Config, None, ["algo.eps_low=wide"])


def test_saved_config_round_trips(tmp_path):
    from posttrain.core.config import dump_config

    cfg = load_config(Config, None, ["algo.loss=gspo_token", "algo.eps_low=0.001"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    again = load_config(Config, path)
    assert again.algo == cfg.algo and again.algo.loss_args == {"eps_low": 0.001}
