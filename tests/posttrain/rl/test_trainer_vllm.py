"""The real path end to end: `posttrain rl` with vLLM engines in a Ray actor pool
(one engine start, ~20-30 s), weights synced every step, no actors left behind."""

from __future__ import annotations

import json

import pytest

from posttrain.core.config import load_config
from posttrain.rl import trainer as rl
from tests.posttrain.rl.test_trainer import PLUGIN

pytestmark = pytest.mark.engine


def test_rl_on_ray_vllm_syncs_versions_and_cleans_up(tiny_model, tiny_task, tmp_path):
    import ray

    ov = [f"model.path={tiny_model}", f"data.train={tiny_task[0]}", f"data.eval={tiny_task[1]}",
          "data.max_eval_rows=16", "rollout.backend=vllm", "rollout.prompts_per_step=8", "rollout.group_size=4",
          "rollout.max_new_tokens=6", "train.steps=3", "eval.every=0", "optim.lr=1e-3", "algo.eps_low=0.2",
          "algo.eps_high=0.2", "engine.max_model_len=256", "ray.num_cpus=2",
          f"reward.components=[{{name: '{PLUGIN}:digit_fraction'}}]", "reward.workers=1"]
    trainer = rl.GSPOTrainer(load_config(rl.Config, None, ov), tmp_path / "run")
    try:
        summary = trainer.fit()
        engines = ray.get([a.state.remote() for a in trainer.generator.actors])  # ask the engines themselves
    finally:
        trainer.close()
    assert [version for _, version in engines] == [3]  # the engine holds the weights of the last step
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [l for l in lines if "reward/mean" in l]
    assert [l["weight_version"] for l in steps] == [1.0, 2.0, 3.0]
    assert any(l["rl/steps_applied"] > 0 for l in steps)
    assert summary["accuracy_before_rl"] is not None and summary["steps"] == 3
    assert not ray.is_initialized()  # the command's own local cluster is shut down


def test_rft_samples_through_the_ray_vllm_pool(tiny_model, tiny_task, tmp_path):
    """`posttrain rft` with `generator: vllm`: k samples per prompt from the engine pool,
    the verifier's verdicts recorded per sample, the kept set trained on, final/ loads."""
    import ray
    from transformers import AutoModelForCausalLM

    from posttrain.core.data import load_rows, write_jsonl
    from posttrain.phases import rft
    from tests.posttrain.phase_fixtures import TINY

    prompts = tmp_path / "prompts.jsonl"
    write_jsonl(prompts, load_rows(tiny_task[0])[:6])
    cfg = load_config(rft.Config, TINY / "rft.yaml", [
        f"model.path={tiny_model}", f"data.prompts={prompts}", f"data.eval={tiny_task[1]}", "generator=vllm",
        "engine.max_model_len=256", "ray.num_cpus=2", "sampling.k=4", "sampling.max_tokens=4",
        "filter.reward.threshold=0.0", "filter.dedup=false", "filter.max_per_prompt=4", "eval.max_rows=8",
        "sft.train.max_steps=2", "sft.train.batch_size=4"])
    s = rft.run(cfg, tmp_path / "run")
    scored = [json.loads(l) for l in (tmp_path / "run" / "scored.jsonl").read_text().splitlines()]
    assert len(scored) == 6 * 4 and {r["prompt_id"] for r in scored} == {r["id"] for r in load_rows(prompts)}
    assert all(r["reward"] is not None for r in scored)  # every sample scored by the verifier
    nonempty = sum(bool(r["completion"].strip()) for r in scored)  # empty samples are never kept
    assert s["rft/prompts"] == 6 and s["rft/kept"] == nonempty > 0  # threshold 0 keeps the rest: no dedup, cap 4
    AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final")
    assert not ray.is_initialized()
