"""The real path end to end: `posttrain rl` with vLLM engines in a Ray actor pool
(one engine start, ~20-30 s), weights synced every step, no actors left behind."""

from __future__ import annotations

import json

import pytest

from posttrain import rl
from posttrain.config import load_config
from tests.posttrain.test_rl_loop import PLUGIN

pytestmark = pytest.mark.engine


def test_rl_on_ray_vllm_syncs_versions_and_cleans_up(tiny_model, tiny_task, tmp_path):
    import ray

    ov = [f"model.path={tiny_model}", f"data.train={tiny_task[0]}", f"data.eval={tiny_task[1]}",
          "data.max_eval_rows=16", "rollout.backend=vllm", "rollout.prompts_per_step=8", "rollout.group_size=4",
          "rollout.max_new_tokens=6", "train.steps=3", "eval.every=0", "optim.lr=1e-3", "algo.eps_low=0.2",
          "algo.eps_high=0.2", "engine.max_model_len=256", "ray.num_cpus=2",
          f"reward.components=[{{name: '{PLUGIN}:digit_fraction'}}]", "reward.workers=1"]
    summary = rl.run(load_config(rl.Config, None, ov), tmp_path / "run")
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if "reward/mean" in l]
    assert [l["weight_version"] for l in steps] == [1.0, 2.0, 3.0]
    assert any(l["rl/steps_applied"] > 0 for l in steps)
    assert summary["accuracy_before_rl"] is not None and summary["steps"] == 3
    assert not ray.is_initialized()  # the command's own local cluster is shut down
