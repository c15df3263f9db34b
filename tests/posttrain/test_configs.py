"""Every YAML under configs/ loads into its typed config: phase YAMLs through the phase table
(dispatch on `phase:`), recipes through the pipeline loader (every stage resolved)."""

from pathlib import Path

import pytest

from posttrain.core.config import ConfigError, read_yaml
from posttrain.phases import PHASES, load_phase_config
from posttrain.pipeline.config import load_pipeline_config, resolve, with_data_defaults

ROOT = Path(__file__).resolve().parents[2]
YAMLS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", YAMLS, ids=[str(p.relative_to(ROOT)) for p in YAMLS])
def test_config_loads(path, tmp_path):
    if read_yaml(path).get("phase") == "pipeline":
        pipe = load_pipeline_config(path)
        stages = resolve(with_data_defaults(pipe, tmp_path), tmp_path)
        assert [s.name for s in stages] == list(pipe.stages)
    else:
        cfg = load_phase_config(path)
        assert type(cfg) is PHASES[cfg.phase].config_class()


def test_every_phase_module_exposes_the_phase_api():
    for phase in PHASES.values():
        module = phase.load()
        assert callable(module.run) and callable(module.outputs), phase.name
        assert module.Config.model_fields["phase"].default == phase.name


def test_unknown_field_names_the_field_and_the_fix():
    with pytest.raises(ConfigError, match=r"field 'train\.max_step' is not a known field; did you mean 'train\.max_steps'"):
        load_phase_config(ROOT / "configs" / "tiny" / "sft.yaml", ["train.max_step=3"])


def test_unknown_phase_names_the_known_ones(tmp_path):
    bad = tmp_path / "x.yaml"
    bad.write_text("phase: ppo\n")
    with pytest.raises(ConfigError, match="field 'phase' must be one of sft, mpo, rl"):
        load_phase_config(bad)
