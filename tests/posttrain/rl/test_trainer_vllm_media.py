"""`posttrain rl` on image and video rows with the tiny Idefics3 model: media prompts through the
Ray+vLLM pool, GSPO updates with pixel inputs, weights (vision tower included) synced every step,
and a final folder that loads as an image-text model with its processor."""

from __future__ import annotations

import json

import pytest

from posttrain.core.config import load_config
from posttrain.core.data import load_rows, write_jsonl
from posttrain.rl import trainer as rl
from posttrain.tasks.tiny_vision import make_tiny_vision_model
from posttrain.tasks.visual import write_visual_task
from tests.posttrain.rl.test_trainer import PLUGIN

# engine + slow: two GSPO steps through Ray+vLLM on image and video rows (~110 s); `make test` keeps the
# faster multimodal engine check, tests/rollouts/test_vllm_media.py
pytestmark = [pytest.mark.engine, pytest.mark.slow]


def test_rl_on_images_and_video_through_ray_vllm(tmp_path):
    import ray
    from transformers import AutoModelForImageTextToText, AutoProcessor

    write_visual_task("visual-add", tmp_path / "add.jsonl", 6, difficulty=1, seed=0)
    write_visual_task("visual-video", tmp_path / "video.jsonl", 4, difficulty=1, seed=0)
    rows = load_rows(tmp_path / "add.jsonl") + load_rows(tmp_path / "video.jsonl")  # absolute media paths
    write_jsonl(tmp_path / "train.jsonl", rows)
    model = make_tiny_vision_model(rows, tmp_path / "vlm", layers=1, seed=0)
    ov = [f"model.path={model}", f"data.train={tmp_path / 'train.jsonl'}", f"data.eval={tmp_path / 'train.jsonl'}",
          "data.max_eval_rows=4", "rollout.backend=vllm", "rollout.prompts_per_step=4", "rollout.group_size=4",
          "rollout.max_new_tokens=4", "train.steps=2", "eval.every=0", "optim.lr=1e-3",
          "engine.max_model_len=256", "engine.max_images_per_prompt=8", "ray.num_cpus=2",
          "rollout.video_token_budget=200",
          f"reward.components=[{{name: '{PLUGIN}:digit_fraction'}}]", "reward.workers=1"]
    summary = rl.run(load_config(rl.Config, None, ov), tmp_path / "run")
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if "reward/mean" in l]
    assert [l["weight_version"] for l in steps] == [1.0, 2.0]
    assert any(l["rl/steps_applied"] > 0 for l in steps)  # updates with pixel inputs ran
    assert summary["accuracy_before_rl"] is not None and summary["steps"] == 2
    final = tmp_path / "run" / "final"
    AutoProcessor.from_pretrained(final)
    AutoModelForImageTextToText.from_pretrained(final)
    assert not ray.is_initialized()
