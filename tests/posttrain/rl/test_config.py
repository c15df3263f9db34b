"""RL config errors name the field and say the fix; overrides parse as YAML."""

import pytest

from posttrain.core.config import ConfigError, apply_overrides, load_config
from posttrain.rl import trainer as rl


def test_overrides_parse_values_and_nest():
    d = apply_overrides({}, ["a.b=3", "a.c=[1, 2]", "x=true", "s=hello", "n="])
    assert d == {"a": {"b": 3, "c": [1, 2]}, "x": True, "s": "hello", "n": None}


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        apply_overrides({}, ["rollout.group_size"])


def test_typo_suggests_the_field():
    with pytest.raises(ConfigError, match=r"'rollout\.group_sise' is not a known field; did you mean 'rollout\.group_size'"):
        load_config(rl.Config, None, ["rollout.group_sise=4"])


def test_bad_value_names_field_and_value():
    with pytest.raises(ConfigError, match=r"field 'rollout\.group_size'.*got 'many'"):
        load_config(rl.Config, None, ["rollout.group_size=many"])


def test_group_of_one_is_refused():
    with pytest.raises(ConfigError, match=r"rollout\.group_size"):
        load_config(rl.Config, None, ["rollout.group_size=1"])


def test_unknown_loss_lists_known_ones():
    with pytest.raises(ConfigError, match=r"unknown policy loss 'ppo'; known: grpo, gspo, gspo_token"):
        load_config(rl.Config, None, ["algo.loss=ppo"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(rl.Config, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rollout: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(rl.Config, bad)


def test_missing_model_path_is_a_clear_error(tmp_path, tiny_task):
    cfg = load_config(rl.Config, None, [f"data.train={tiny_task[0]}"])
    with pytest.raises(ValueError, match="model.path' is not set"):
        rl.run(cfg, tmp_path / "run")


@pytest.mark.parametrize("override,field", [("optim.lr=-1e-3", "optim.lr"), ("optim.lr=.nan", "optim.lr"),
                                            ("optim.betas=[0.9,1.5]", "optim.betas"),
                                            ("optim.max_grad_norm=0", "optim.max_grad_norm")])
def test_invalid_optimizer_values_are_refused_at_load(override, field):
    with pytest.raises(ConfigError, match=rf"field '{field}'"):
        load_config(rl.Config, None, [override])


def test_speed_sections_are_documented_in_rl_help():
    """Every key of issue 16's sections appears in `posttrain rl --help` (the phase table's text)."""
    from posttrain.phases import PHASES
    from posttrain.rl.config import DynamicSamplingConfig, OffPolicyConfig, OverlongConfig

    text = PHASES["rl"].help
    assert "rollout.max_staleness" in text and "rollout.partial_rollouts" in text
    for section, cls in (("dynamic_sampling", DynamicSamplingConfig), ("off_policy", OffPolicyConfig),
                         ("overlong", OverlongConfig)):
        block = text.split(f"{section}.{{", 1)[1].split("}", 1)[0]
        assert [f for f in cls.model_fields if f not in block] == [], section


@pytest.mark.parametrize("overrides,message", [
    (["trainer.num_workers=2"], r"trainer\.num_workers=2 needs a distributed strategy.*trainer\.strategy=fsdp"),
    (["trainer.strategy=fsdp", "trainer.backend=nccl"], r"trainer\.backend=nccl needs GPUs.*num_gpus_per_worker"),
    (["trainer.strategy=zero3"], r"field 'trainer\.strategy'"),
    (["trainer.num_workers=0", "trainer.strategy=fsdp"], r"field 'trainer\.num_workers'"),
    (["trainer.timeout_s=0", "trainer.strategy=fsdp"], r"field 'trainer\.timeout_s'"),
])
def test_trainer_section_errors_name_the_field(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(rl.Config, None, overrides)


def test_trainer_backend_follows_the_workers_devices_and_reaches_pipeline_stages(tmp_path):
    from tests.posttrain.pipeline.test_pipeline import _plan

    cpu = load_config(rl.Config, None, ["trainer.strategy=fsdp", "trainer.num_workers=2"]).trainer
    gpu = load_config(rl.Config, None, ["trainer.strategy=ddp", "trainer.num_gpus_per_worker=1"]).trainer
    assert (cpu.resolved_backend(), gpu.resolved_backend()) == ("gloo", "nccl")
    assert load_config(rl.Config).trainer.strategy == "single"  # the default: today's in-process trainer
    plan = _plan(tmp_path, "defaults.rl.trainer.strategy=fsdp", "stages.rl2.values.trainer.num_workers=2")
    assert plan["rl1"].cfg.trainer.strategy == "fsdp" == plan["rl2"].cfg.trainer.strategy
    assert (plan["rl1"].cfg.trainer.num_workers, plan["rl2"].cfg.trainer.num_workers) == (1, 2)
