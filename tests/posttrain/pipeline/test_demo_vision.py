"""`make demo-vision` (configs/vision/demo.yaml): the pipeline writes the visual task and the tiny
Idefics3 model, SFT -> GSPO, and the summary has the text demo's keys. The short run trains a few
steps with the HF generator (fast enough for `make test`); the slow one is the real demo on the
Ray + vLLM engines and checks the issue's bar (>= 10 points from GSPO in <= 10 minutes of RL)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.core.data import load_rows
from posttrain.pipeline import runner as pipeline
from posttrain.pipeline.config import load_pipeline_config, resolve, with_data_defaults

ROOT = Path(__file__).resolve().parents[3]
DEMO = ROOT / "configs" / "vision" / "demo.yaml"
KEYS = {"accuracy_before_rl", "accuracy_after_rl", "rl_wall_s", "sft_model", "final_model", "eval_data"}


def test_demo_recipe_is_sft_then_rl_on_the_visual_task_with_a_tiny_vlm(tmp_path):
    cfg = with_data_defaults(load_pipeline_config(DEMO), tmp_path)
    sft, rl = resolve(cfg, tmp_path)
    assert (sft.kind, rl.kind) == ("sft", "rl") and sft.tiny_init and sft.cfg.model.tiny_vision
    assert rl.cfg.model.path == str(tmp_path / "sft" / "final") and rl.cfg.rollout.backend == "vllm"
    assert sft.cfg.eval.stop_at_accuracy is not None  # SFT stops at partial competence
    assert rl.cfg.data.eval == sft.cfg.data.eval == str(tmp_path / "data" / "eval.jsonl")


def test_a_short_demo_vision_writes_the_demo_summary(tmp_path):
    cfg = load_pipeline_config(DEMO, [
        "data.demo_train_rows=24", "data.demo_eval_rows=6", "report=false",
        "stages.sft.values={train: {max_steps: 2, batch_size: 8}, eval: {stop_at_accuracy: null, max_rows: 6}}",
        "stages.rl.values={rollout: {backend: hf, prompts_per_step: 2, group_size: 2}, train: {steps: 1},"
        " eval: {every: 0}}"])
    s = pipeline.run_pipeline(cfg, tmp_path)
    assert KEYS <= set(s) and s["accuracy_before_rl"] is not None and s["accuracy_after_rl"] is not None
    assert s["final_model"] == str(tmp_path / "rl" / "final") and (tmp_path / "rl" / "final" / "config.json").is_file()
    eval_rows = load_rows(s["eval_data"])
    assert len(eval_rows) == 6 and all(r["task"] == "visual-quadrants" and r["images"] for r in eval_rows)
    train_images = {Path(r["images"][0]).name for r in load_rows(tmp_path / "data" / "train.jsonl")}
    assert not train_images & {Path(r["images"][0]).name for r in eval_rows}  # held-out images are unseen
    assert json.loads((tmp_path / "summary.json").read_text())["rl_wall_s"] == s["rl_wall_s"]


@pytest.mark.slow
@pytest.mark.engine
def test_demo_vision_gains_ten_points_through_gspo_in_ten_minutes(tmp_path):
    s = pipeline.run_pipeline(load_pipeline_config(DEMO), tmp_path)
    assert s["accuracy_after_rl"] - s["accuracy_before_rl"] >= 0.10, s
    assert s["rl_wall_s"] <= 600, s
