"""The Keye recipe on images (configs/vision/keye.yaml): SFT -> GSPO -> RFT -> filter -> GSPO on the
visual task with the tiny Idefics3 model. The short run trains a few steps with the HF generator
(plus an MPO stage on the image pairs built from RFT's samples) and records every prompt any stage
samples: all of them carry their row's images, and RFT's kept samples, the filter's prompts and the
MPO pairs keep them. The slow run is the recipe at its real size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from posttrain.core.data import load_rows
from posttrain.pipeline import runner as pipeline
from posttrain.pipeline.config import load_pipeline_config, resolve, with_data_defaults
from posttrain.phases.sft_data import load_source
from rollouts.hf import HFGenerator

ROOT = Path(__file__).resolve().parents[3]
RECIPE = ROOT / "configs" / "vision" / "keye.yaml"
HF = "{rollout: {backend: hf, prompts_per_step: 4, group_size: 4}, train: {steps: 1}, eval: {every: 0}}"
SHORT = [
    "data.demo_train_rows=24", "data.demo_eval_rows=6", "report=false",
    "defaults.rft.generator=hf", "defaults.filter.generator=hf",
    "stages.sft.values={train: {max_steps: 12, batch_size: 8}, optim: {warmup_steps: 0},"
    " eval: {stop_at_accuracy: null, max_rows: 6}}",
    f"stages.rl1.values={HF}", f"stages.rl2.values={HF}",
    "stages.rft.values={data: {max_prompts: 12}, sampling: {k: 4}, sft: {train: {max_steps: 2, batch_size: 4}},"
    " eval: {max_rows: 6}}",
    "stages.filter.values={data: {max_prompts: 24}, sampling: {k: 4}}",
    # MPO on image pairs the pipeline builds from RFT's scored samples
    "stages.mpo={kind: mpo, config: configs/tiny/mpo.yaml, from: {model: rl2, pairs: rft}, values: {data: {eval: null},"
    " train: {max_steps: 2, batch_size: 4, max_length: 128}, eval: {max_rows: 6, max_new_tokens: 3}}}",
]


def test_the_recipe_is_keyes_schedule_on_images_with_every_sampler_on_the_engines(tmp_path):
    plan = {st.name: st for st in resolve(with_data_defaults(load_pipeline_config(RECIPE), tmp_path), tmp_path)}
    assert [(n, st.kind) for n, st in plan.items()] == [("sft", "sft"), ("rl1", "rl"), ("rft", "rft"),
                                                        ("filter", "filter"), ("rl2", "rl")]
    assert plan["sft"].tiny_init and plan["sft"].cfg.model.tiny_vision
    assert plan["rft"].cfg.model.path == str(tmp_path / "rl1" / "final")
    assert plan["rft"].cfg.sft.start_model == str(tmp_path / "sft" / "final")
    assert plan["rft"].cfg.sft.extra[0].path == str(tmp_path / "data" / "train.jsonl")  # mixed with the SFT data
    assert plan["filter"].cfg.model.path == str(tmp_path / "rft" / "final")
    assert plan["rl2"].cfg.data.train == str(tmp_path / "filter" / "rl_prompts.jsonl")
    for name in ("rl1", "rl2"):
        assert plan[name].cfg.rollout.backend == "vllm" and plan[name].cfg.engine.max_images_per_prompt == 1
    for name in ("rft", "filter"):
        assert plan[name].cfg.generator == "vllm" and plan[name].cfg.engine.max_images_per_prompt == 1


def test_a_short_keye_run_on_images_carries_the_media_through_every_stage(tmp_path, monkeypatch):
    seen: list[tuple[str, object]] = []  # (prompt id, media) of every prompt any stage sampled
    generate = HFGenerator.generate

    def recording(self, prompts, sampling, step=0):
        seen.extend((p.prompt_id, p.media) for p in prompts)
        return generate(self, prompts, sampling, step)

    monkeypatch.setattr(HFGenerator, "generate", recording)
    s = pipeline.run_pipeline(load_pipeline_config(RECIPE, SHORT), tmp_path)
    assert [st["name"] for st in s["stages"]] == ["sft", "rl1", "rft", "filter", "rl2", "mpo"]
    assert all(st["accuracy"] is not None for st in s["stages"])
    assert s["final_model"] == str(tmp_path / "mpo" / "final")
    rows = {r["id"]: r for r in load_rows(tmp_path / "data" / "train.jsonl") + load_rows(s["eval_data"])}
    assert seen and all(m is not None and list(m.images) == rows[rid]["images"] for rid, m in seen)
    kept = [json.loads(x) for x in (tmp_path / "rft" / "kept.jsonl").read_text().splitlines()]
    assert kept and all(k["images"] == rows[k["prompt_id"]]["images"] for k in kept)
    assert all(r["images"] for r in load_source(str(tmp_path / "rft" / "kept.jsonl")).rows)  # RFT's SFT rows
    filtered = load_rows(tmp_path / "filter" / "rl_prompts.jsonl")
    assert filtered and all(r["images"] == rows[r["id"]]["images"] for r in filtered)
    pairs = [json.loads(x) for x in (tmp_path / "mpo" / "pairs.jsonl").read_text().splitlines()]
    assert pairs and all(p["images"] == rows[p["id"]]["images"] for p in pairs)
    sampled = {rid for rid, _ in seen}
    assert {k["prompt_id"] for k in kept} <= sampled and {r["id"] for r in filtered} <= sampled


@pytest.mark.slow
@pytest.mark.engine
def test_the_keye_recipe_on_images_at_its_real_size(tmp_path):
    s = pipeline.run_pipeline(load_pipeline_config(RECIPE), tmp_path)
    acc = {st["name"]: st["accuracy"] for st in s["stages"]}
    assert acc["rl1"] > acc["sft"] and acc["rl2"] >= acc["sft"], acc
